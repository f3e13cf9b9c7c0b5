"""``open_slide``: one entry point over every slide format we accept (the large_image pattern).

Each reader is a plugin (``slide_io.source.ReaderPlugin``) in its own module, declaring
what it can open and a priority; ``open_slide`` inspects the file once and tries them in
order:

* vendor formats OpenSlide recognises -> ``openslide_reader`` (priority 10);
* DICOM WSI: OpenSlide first (20), then the tolerant pydicom reader (30, ``dicom_reader``);
* plain / OME / our own pyramidal TIFF -> ``tiff_reader`` (40, tifffile);
* PNG / JPEG -> ``pillow_reader`` (50).

In-memory images use ``slide_io.array_source.ArraySlideSource`` directly.
"""

from __future__ import annotations

from pathlib import Path

from slide_io.dicom_reader import PLUGIN as PYDICOM
from slide_io.errors import UnreadableSlide, UnsupportedFormat
from slide_io.limits import DEFAULT_LIMITS, PixelLimits
from slide_io.openslide_reader import DICOM as OPENSLIDE_DICOM
from slide_io.openslide_reader import VENDOR_FORMATS as OPENSLIDE
from slide_io.pillow_reader import PLUGIN as PILLOW
from slide_io.sniff import inspect
from slide_io.source import ReaderPlugin, SlideSource
from slide_io.tiff_reader import PLUGIN as TIFFFILE

READERS: tuple[ReaderPlugin, ...] = tuple(sorted(
    (OPENSLIDE, OPENSLIDE_DICOM, PYDICOM, TIFFFILE, PILLOW),
    key=lambda plugin: plugin.priority))

SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff", ".dcm", ".png", ".jpg", ".jpeg", ".vms", ".bif")


def open_slide(path: str | Path, *, limits: PixelLimits = DEFAULT_LIMITS,
               readers: tuple[ReaderPlugin, ...] = READERS) -> SlideSource:
    """Open any supported slide file, refusing bad input with a typed ``SlideError``."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableSlide("no such file", name=path)
    if path.stat().st_size == 0:
        raise UnreadableSlide("file is empty", name=path)
    file = inspect(path)
    for plugin in readers:
        if not plugin.can_open(file):
            continue
        try:
            return plugin.open(file, limits)
        except UnreadableSlide:
            if not plugin.yields_on_failure:
                raise
    if file.kind == "unknown" and path.suffix.lower() in SLIDE_SUFFIXES:
        raise UnreadableSlide(f"content does not match its {path.suffix} extension (corrupt file?)", name=path)
    raise UnsupportedFormat(f"not a supported slide format (looks like: {file.kind})", name=path)
