"""Sample scans for the demo, the bench and the tests: real slides from the shared data set,
and bad files built on the fly (truncated, unsupported, decompression bomb).

The real files are read in place from ``settings.shared_data``; nothing is copied into the repo.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile


@dataclass(frozen=True)
class Sample:
    label: str
    path: Path
    magnification: float | None  # what the scanner declares (None: the file states it)
    expect: str  # "passed" or the expected failure, for readers of the demo output


def real_samples(shared_data: Path) -> list[Sample]:
    """A vendor WSI, a 40x H&E tile, and a real out-of-focus scan (should fail on blur)."""
    return [
        Sample("Aperio SVS (CMU-1, 20x)", shared_data / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs",
               None, "passed"),
        Sample("MoNuSeg H&E tile (40x)", shared_data / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif", 40.0, "passed"),
        Sample("FocusPath out-of-focus (40x)", shared_data / "qc_artefacts/focus/fqpath_sample_out_of_focus.png",
               40.0, "blur"),
    ]


def truncated_copy(source: Path, destination: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``: a transfer cut short."""
    data = source.read_bytes()
    destination.write_bytes(data[: max(1, int(len(data) * fraction))])
    return destination


def unsupported_file(destination: Path) -> Path:
    """A PDF named like a scan."""
    destination.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n" + b"\0" * 256)
    return destination


def tiff_bomb(destination: Path, width: int = 250_000, height: int = 200_000) -> Path:
    """A small tiled TIFF whose header declares ``width`` x ``height`` pixels (50 Gpx)."""
    tifffile.imwrite(destination, np.zeros((64, 64, 3), np.uint8), tile=(64, 64), photometric="rgb")
    with tifffile.TiffFile(destination) as tif:
        tags = tif.pages[0].tags
        offsets = [tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
        dtypes = [tags[name].dtype for name in ("ImageWidth", "ImageLength")]
    if any(dtype != 4 for dtype in dtypes):  # LONG tags have room for the larger values
        raise RuntimeError("tifffile wrote SHORT size tags; cannot patch them")
    data = bytearray(destination.read_bytes())
    for offset, value in zip(offsets, (width, height)):
        struct.pack_into("<I", data, offset, value)
    destination.write_bytes(bytes(data))
    return destination


def bad_samples(shared_data: Path, directory: Path) -> list[Sample]:
    """Bad input QC must refuse with a clear reason (the agent keeps running)."""
    svs = shared_data / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs"
    return [
        Sample("truncated SVS", truncated_copy(svs, directory / "truncated.svs"), None, "unreadable"),
        Sample("PDF named .svs", unsupported_file(directory / "report.svs"), None, "unsupported_format"),
        Sample("TIFF bomb (50 Gpx declared)", tiff_bomb(directory / "bomb.tif"), 20.0, "too_large"),
    ]
