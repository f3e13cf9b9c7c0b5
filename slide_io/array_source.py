"""An in-memory image behind the ``SlideSource`` interface (not a file reader)."""

from __future__ import annotations

import numpy as np

from slide_io.pixels import to_rgb8
from slide_io.source import SlideSource


class ArraySlideSource(SlideSource):
    """An in-memory RGB image (e.g. a freshly built LR slide) behind the same interface."""

    def __init__(self, pixels: np.ndarray, *, mpp: float | None = None, magnification: float | None = None,
                 name: str = "array") -> None:
        self.name, self.format = name, "array"
        self._pixels = to_rgb8(np.asarray(pixels), name=name)
        self._mpp, self._mag = mpp, magnification

    @property
    def pixels(self) -> np.ndarray:
        return self._pixels

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(self._pixels.shape[1], self._pixels.shape[0])]

    @property
    def mpp(self) -> float | None:
        return self._mpp

    @property
    def magnification(self) -> float | None:
        return self._mag

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._pixels[y : y + height, x : x + width]
