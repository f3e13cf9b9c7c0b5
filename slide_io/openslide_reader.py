"""Vendor formats through OpenSlide (Aperio SVS, Hamamatsu NDPI/VMS, MIRAX, Leica SCN,
Philips TIFF, Ventana, Sakura, conformant DICOM WSI...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide

from slide_io.errors import UnreadableSlide
from slide_io.limits import PixelLimits
from slide_io.source import ReaderPlugin, SlideSource, positive_float


class OpenSlideSource(SlideSource):
    def __init__(self, path: Path, vendor: str, limits: PixelLimits) -> None:
        self.name, self.format, self.limits = path.name, vendor, limits
        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise UnreadableSlide(f"OpenSlide cannot open this {vendor} file ({exc})", name=path) from exc
        w, h = self._slide.dimensions
        limits.check_slide(w, h, name=self.name)
        props = self._slide.properties
        self._mpp = positive_float(props.get(openslide.PROPERTY_NAME_MPP_X))
        self._mag = positive_float(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return list(self._slide.level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        return list(self._slide.level_downsamples)

    @property
    def mpp(self) -> float | None:
        return self._mpp

    @property
    def magnification(self) -> float | None:
        return self._mag

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self._slide.level_downsamples[level]
        rgba = np.asarray(self._slide.read_region((round(x * ds), round(y * ds)), level, (width, height)))
        # OpenSlide returns un-premultiplied RGBA with alpha 0 where nothing was scanned.
        alpha = rgba[:, :, 3:4].astype(np.uint16)
        rgb = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)

    def close(self) -> None:
        self._slide.close()


# OpenSlide reads plain TIFF too ("generic-tiff"); tifffile's reader serves those better.
VENDOR_FORMATS = ReaderPlugin(
    name="openslide", priority=10,
    can_open=lambda f: f.vendor not in (None, "generic-tiff", "dicom"),
    open=lambda f, limits: OpenSlideSource(f.path, f.vendor or "unknown", limits))

# OpenSlide wants full DICOM WSI conformance; many real files lack some tags, so on failure
# the tolerant pydicom reader gets its turn.
DICOM = ReaderPlugin(
    name="openslide-dicom", priority=20, yields_on_failure=True,
    can_open=lambda f: f.vendor == "dicom",
    open=lambda f, limits: OpenSlideSource(f.path, "dicom", limits))
