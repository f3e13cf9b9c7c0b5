"""The one interface every slide reader implements (compare large_image's tile sources), and
what a reader plugin declares so that ``slide_io.readers.open_slide`` can pick it.

Coordinates of ``read_region`` are in the pixel space of the requested level (not level 0,
unlike OpenSlide's own API). Pixels come back as uint8 RGB (H, W, 3); anything outside the
image reads as white glass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slide_io.errors import SlideError, UnreadableSlide
from slide_io.limits import DEFAULT_LIMITS, PixelLimits
from slide_io.pixels import blank

# Magnification of a scan from its pixel size: the usual convention (40x ~ 0.25 um/px).
MICRONS_AT_1X = 10.0


class SlideSource(ABC):
    """Read access to one slide image with a resolution pyramid (possibly of one level)."""

    name: str
    format: str  # e.g. "aperio", "tiff", "dicom", "png"

    @property
    @abstractmethod
    def level_dimensions(self) -> list[tuple[int, int]]:
        """(width, height) per level, level 0 first (largest)."""

    @property
    @abstractmethod
    def mpp(self) -> float | None:
        """Microns per pixel at level 0, when the file states it."""

    @property
    @abstractmethod
    def magnification(self) -> float | None:
        """Objective power at level 0, when the file states it."""

    @abstractmethod
    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Region inside the level bounds, uint8 RGB."""

    def close(self) -> None:  # noqa: B027 - optional hook: readers holding no handle need no close
        pass

    # --- shared behaviour ---------------------------------------------------------------

    limits: PixelLimits = DEFAULT_LIMITS

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        w0, h0 = self.dimensions
        return [((w0 / w) + (h0 / h)) / 2 for w, h in self.level_dimensions]

    def effective_magnification(self) -> float | None:
        """Stated magnification, else derived from mpp (10 / mpp), else None."""
        if self.magnification:
            return self.magnification
        return MICRONS_AT_1X / self.mpp if self.mpp else None

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Pixels of ``level`` in [x, x+width) x [y, y+height); outside the image is white."""
        if not 0 <= level < self.level_count:
            raise IndexError(f"level {level} out of range 0..{self.level_count - 1}")
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {width}x{height}")
        self.limits.check_region(width, height, name=self.name)
        lw, lh = self.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, lw), min(y + height, lh)
        if x0 == x and y0 == y and x1 == x + width and y1 == y + height:
            return self._read_checked(level, x, y, width, height)
        out = blank(height, width)
        if x0 < x1 and y0 < y1:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read_checked(level, x0, y0, x1 - x0, y1 - y0)
        return out

    def read_level(self, level: int) -> np.ndarray:
        """A whole level in memory (checked against ``max_image_pixels``)."""
        w, h = self.level_dimensions[level]
        self.limits.check_image(w, h, name=self.name)
        if w * h <= self.limits.max_region_pixels:
            return self._read_checked(level, 0, 0, w, h)
        return self._read_in_bands(level)

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample does not exceed ``downsample`` (never upsample)."""
        best = 0
        for index, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.001:
                best = index
        return best

    def thumbnail(self, max_side: int) -> np.ndarray:
        """Whole slide scaled so its longer side is at most ``max_side`` (area-averaged)."""
        from slide_io.resample import area_resize

        w0, h0 = self.dimensions
        factor = max(1.0, max(w0, h0) / max_side)
        level = self.best_level_for_downsample(factor)
        pixels = self.read_level(level)
        lw, lh = self.level_dimensions[level]
        out_w, out_h = max(1, round(w0 / factor)), max(1, round(h0 / factor))
        if (out_w, out_h) == (lw, lh):
            return pixels
        return area_resize(pixels, out_w, out_h)

    def _read_in_bands(self, level: int) -> np.ndarray:
        w, h = self.level_dimensions[level]
        out = np.empty((h, w, 3), dtype=np.uint8)
        band = max(1, self.limits.max_region_pixels // w)
        for y in range(0, h, band):
            out[y : y + band] = self._read_checked(level, 0, y, w, min(band, h - y))
        return out

    def _read_checked(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        try:
            region = self._read(level, x, y, width, height)
        except (SlideError, IndexError, ValueError):
            raise
        except Exception as exc:  # codec errors surface with many types
            raise UnreadableSlide(f"cannot decode region of level {level} ({exc})", name=self.name) from exc
        if region.shape != (height, width, 3) or region.dtype != np.uint8:
            raise UnreadableSlide(f"reader returned {region.shape} {region.dtype} for a {width}x{height} region", name=self.name)
        return region

    def __enter__(self) -> SlideSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, format={self.format!r}, dims={self.dimensions}, "
                f"levels={self.level_count}, mpp={self.mpp}, mag={self.magnification})")


@dataclass(frozen=True)
class SlideFile:
    """What is known about a file before any reader opens it."""

    path: Path
    kind: str  # sniffed from the first bytes: tiff, dicom, png, jpeg, or what it is instead
    vendor: str | None  # OpenSlide's format detection (None: OpenSlide does not recognise it)


@dataclass(frozen=True)
class ReaderPlugin:
    """A slide reader as ``open_slide`` sees it. Plugins are tried by ascending ``priority``;
    the first whose ``can_open`` accepts the file opens it. If that fails with
    ``UnreadableSlide`` and ``yields_on_failure`` is set, the next plugin that accepts the
    file is tried (OpenSlide's strict DICOM, then our tolerant reader)."""

    name: str
    priority: int
    can_open: Callable[[SlideFile], bool]
    open: Callable[[SlideFile, PixelLimits], SlideSource]
    yields_on_failure: bool = False


def positive_float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number and number > 0 else None
