"""PNG and JPEG through Pillow, decoded whole (after the size check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from slide_io.errors import SlideError, SlideTooLarge, UnreadableSlide, UnsupportedFormat
from slide_io.limits import PixelLimits
from slide_io.pixels import to_rgb8
from slide_io.source import ReaderPlugin, SlideSource

PILLOW_FORMATS = ("PNG", "JPEG")


class PillowSlideSource(SlideSource):
    """PNG/JPEG: size read from the header, pixels decoded once on first access."""

    def __init__(self, path: Path, limits: PixelLimits) -> None:
        self.name, self.limits = path.name, limits
        try:
            with Image.open(path) as image:
                self.format = (image.format or "unknown").lower()
                if image.format not in PILLOW_FORMATS:
                    raise UnsupportedFormat(f"image format {image.format} is not accepted", name=path)
                self._size = image.size
        except Image.DecompressionBombError as exc:
            raise SlideTooLarge(f"refused before decoding: {exc}", name=path) from exc
        except SlideError:
            raise
        except Exception as exc:
            raise UnreadableSlide(f"cannot read image header ({exc})", name=path) from exc
        limits.check_image(*self._size, name=self.name)
        self._path = path
        self._pixels: np.ndarray | None = None

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [self._size]

    @property
    def mpp(self) -> float | None:
        return None

    @property
    def magnification(self) -> float | None:
        return None

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if self._pixels is None:
            try:
                with Image.open(self._path) as image:
                    image.load()
                    self._pixels = _pillow_to_rgb8(image, self.name)
            except SlideError:
                raise
            except Exception as exc:
                raise UnreadableSlide(f"image data does not decode ({exc})", name=self.name) from exc
        return self._pixels[y : y + height, x : x + width]


def _pillow_to_rgb8(image: Image.Image, name: str) -> np.ndarray:
    if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        image = image.convert("RGBA" if image.mode == "PA" else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return to_rgb8(np.asarray(image, dtype=np.uint16), name=name)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        raise UnsupportedFormat(f"image mode {image.mode} is not supported", name=name)
    return to_rgb8(np.asarray(image), name=name)


PLUGIN = ReaderPlugin(name="pillow", priority=50, can_open=lambda f: f.kind in ("png", "jpeg"),
                      open=lambda f, limits: PillowSlideSource(f.path, limits))
