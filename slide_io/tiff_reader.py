"""Plain, OME and our own pyramidal TIFF through tifffile, read chunk-wise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slide_io.limits import PixelLimits
from slide_io.source import ReaderPlugin, SlideSource
from slide_io.tiles import TiledTiff


class TiffSlideSource(SlideSource):
    def __init__(self, path: Path, limits: PixelLimits) -> None:
        self.name, self.format, self.limits = path.name, "tiff", limits
        self._tiff = TiledTiff(path, limits=limits)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(lv.width, lv.height) for lv in self._tiff.levels]

    @property
    def mpp(self) -> float | None:
        return self._tiff.mpp

    @property
    def magnification(self) -> float | None:
        return self._tiff.magnification

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._tiff.read_region(level, x, y, width, height)

    def close(self) -> None:
        self._tiff.close()


PLUGIN = ReaderPlugin(name="tifffile", priority=40, can_open=lambda f: f.kind == "tiff",
                      open=lambda f, limits: TiffSlideSource(f.path, limits))
