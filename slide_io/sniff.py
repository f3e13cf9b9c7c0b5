"""What a file is, from its first bytes and OpenSlide's detection, before a reader opens it."""

from __future__ import annotations

from pathlib import Path

import openslide

from slide_io.source import SlideFile

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_KNOWN_OTHERS = {b"PK\x03\x04": "ZIP archive", b"%PDF": "PDF document", b"GIF8": "GIF image",
                 b"\x1f\x8b": "gzip archive", b"BM": "BMP image"}


def sniff(path: Path) -> str:
    """'tiff', 'dicom', 'png', 'jpeg' or a description of what the file is instead."""
    with path.open("rb") as fh:
        head = fh.read(132)
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    for magic, what in _KNOWN_OTHERS.items():
        if head.startswith(magic):
            return what
    return "unknown"


def inspect(path: Path) -> SlideFile:
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError:
        vendor = None
    return SlideFile(path=path, kind=sniff(path), vendor=vendor)
