"""Tiles cut from the stored LR pyramid (pure: pixels in, pixels or encoded bytes out).

Levels up to the LR magnification are downsamples: each is cut from the stored pyramid
level nearest above it (a zoomed-out view never decodes level 0). Above it, the same cut
upsampled is the *placeholder* shown until the super-resolved tile is ready, and the "LR"
side of the comparison view.
"""

from __future__ import annotations

import io
import math
from typing import Protocol

import numpy as np
from PIL import Image

from viewer.deepzoom import SlideView


class LevelReader(Protocol):
    @property
    def level_sizes(self) -> list[tuple[int, int]]: ...

    def read_level_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray: ...


def source_level(level_sizes: list[tuple[int, int]], downsample: float) -> tuple[int, float]:
    """The coarsest stored level whose own downsample does not exceed ``downsample``, and
    that level's downsample (so the cut is reduced, never enlarged, to the tile)."""
    base = level_sizes[0][0]
    best, best_d = 0, 1.0
    for index, (width, _) in enumerate(level_sizes):
        d = base / width
        if d <= downsample * 1.0001 and d > best_d:
            best, best_d = index, d
    return best, best_d


def cut_tile(slide: LevelReader, view: SlideView, level: int, col: int, row: int) -> np.ndarray:
    """The tile's pixels from LR: a downsample on LR levels, an upsample on SR levels."""
    box = view.box(level, col, row)
    window = view.lr_window(level, col, row)
    stored, d = source_level(slide.level_sizes, 1.0 / window.factor) if window.factor < 1 else (0, 1.0)
    x0, y0 = math.floor(window.x / d), math.floor(window.y / d)
    x1, y1 = math.ceil((window.x + window.width) / d), math.ceil((window.y + window.height) / d)
    pixels = slide.read_level_region(stored, x0, y0, max(1, x1 - x0), max(1, y1 - y0))
    if pixels.shape[1] == box.width and pixels.shape[0] == box.height:
        return pixels
    resample = Image.Resampling.BICUBIC if window.factor > 1 else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(pixels).resize((box.width, box.height), resample))


def encode(pixels: np.ndarray, media_type: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if media_type == "image/png":
        image.save(buffer, format="PNG", compress_level=1)  # speed over size: tiles are transient
    else:
        image.save(buffer, format="JPEG", quality=quality, subsampling=0)  # 4:4:4: keep stain edges
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
