"""Deep Zoom geometry of one slide as the viewer shows it (pure; no I/O).

The pyramid is the x``scale`` HR pyramid of ``schemas.layout`` (the LR level 0 upscaled to
the target magnification, 40x for a 5x slide). Its levels up to ``lr_level`` are the LR
image and its downsamples: they are cut from the stored LR pyramid. The ``log2(scale)``
levels above are super-resolution levels: hr-cache tiles, computed on demand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from schemas.layout import ALLOWED_SCALES, TILE_SIZE, dzi_max_level, level_size, tile_grid

LevelKind = Literal["lr", "sr"]
TILE_FORMATS = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png"}


class TileOutOfRange(ValueError):
    """A level, column or row that the slide's pyramid does not have (the message says why)."""


@dataclass(frozen=True)
class TileBox:
    """A tile's pixel rectangle on its level."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class LrWindow:
    """What a tile needs from LR level 0: a rectangle and the factor from LR to the tile
    (< 1: the tile is a downsample; > 1: it is an upscale, i.e. a super-resolution level)."""

    x: int
    y: int
    width: int
    height: int
    factor: float


@dataclass(frozen=True)
class SlideView:
    lr_width: int
    lr_height: int
    scale: int
    lr_magnification: float | None = None

    def __post_init__(self) -> None:
        if self.lr_width <= 0 or self.lr_height <= 0:
            raise ValueError(f"slide size must be positive, got {self.lr_width}x{self.lr_height}")
        if self.scale not in ALLOWED_SCALES:
            raise ValueError(f"scale {self.scale} is not one of {ALLOWED_SCALES}")

    @property
    def width(self) -> int:
        return self.lr_width * self.scale

    @property
    def height(self) -> int:
        return self.lr_height * self.scale

    @property
    def max_level(self) -> int:
        return dzi_max_level(self.width, self.height)

    @property
    def lr_level(self) -> int:
        """The Deep Zoom level that is exactly the LR image (level 0 of the stored pyramid)."""
        return self.max_level - int(math.log2(self.scale))

    def kind(self, level: int) -> LevelKind:
        return "sr" if level > self.lr_level else "lr"

    def magnification(self, level: int) -> float | None:
        if self.lr_magnification is None:
            return None
        return self.lr_magnification * 2.0 ** (level - self.lr_level)

    def box(self, level: int, col: int, row: int) -> TileBox:
        if not 0 <= level <= self.max_level:
            raise TileOutOfRange(f"level {level} is outside 0..{self.max_level}")
        cols, rows = tile_grid(self.width, self.height, level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileOutOfRange(f"tile {col},{row} is outside level {level} ({cols}x{rows} tiles)")
        width, height = level_size(self.width, self.height, level)
        x, y = col * TILE_SIZE, row * TILE_SIZE
        return TileBox(x, y, min(TILE_SIZE, width - x), min(TILE_SIZE, height - y))

    def lr_window(self, level: int, col: int, row: int) -> LrWindow:
        """The LR level-0 rectangle a tile shows, clipped to the slide."""
        box = self.box(level, col, row)
        factor = 2.0 ** (level - self.lr_level)
        x0, y0 = math.floor(box.x / factor), math.floor(box.y / factor)
        x1 = min(self.lr_width, math.ceil((box.x + box.width) / factor))
        y1 = min(self.lr_height, math.ceil((box.y + box.height) / factor))
        return LrWindow(x0, y0, max(1, x1 - x0), max(1, y1 - y0), factor)

    def dzi(self, tile_format: str = "jpeg") -> str:
        """The Deep Zoom descriptor (XML)."""
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
                f'Format="{tile_format}" Overlap="0" TileSize="{TILE_SIZE}">'
                f'<Size Width="{self.width}" Height="{self.height}"/></Image>')

    def levels(self) -> list[dict[str, object]]:
        return [{"level": level, "magnification": self.magnification(level), "kind": self.kind(level)}
                for level in range(self.max_level + 1)]
