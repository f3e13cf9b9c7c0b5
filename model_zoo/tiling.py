"""Overlap-tile planning for exact, seam-free tiled inference.

The image is cut into non-overlapping *cores*; each core is computed from a *window*
that extends it by at least ``margin`` LR pixels of real context on every side that is
not an image edge. With ``margin`` at least the generator's receptive radius, every
output pixel sees exactly the input pixels it would see in a whole-image pass, so
cores can simply be written side by side: the result equals the single pass (within
float rounding) and there is no seam to blend away. Windows keep one size (shifted
inwards at the image edges instead of being clipped), so they batch together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """One axis of a tile: the window read and the core written, in LR pixels."""

    window_start: int
    window_size: int
    core_start: int
    core_end: int

    @property
    def core_offset(self) -> int:
        return self.core_start - self.window_start


def plan_axis(length: int, tile: int, margin: int) -> list[Span]:
    if length <= 0 or tile <= 0 or margin < 0:
        raise ValueError(f"invalid tiling: length={length} tile={tile} margin={margin}")
    window = min(length, tile + 2 * margin)
    spans = []
    for core_start in range(0, length, tile):
        core_end = min(core_start + tile, length)
        start = min(max(core_start - margin, 0), length - window)
        spans.append(Span(start, window, core_start, core_end))
    return spans


@dataclass(frozen=True)
class Tile:
    rows: Span
    cols: Span


def plan_tiles(height: int, width: int, tile: int, margin: int) -> list[Tile]:
    """Row-major tiles covering an image; all windows share one shape."""
    return [Tile(r, c) for r in plan_axis(height, tile, margin) for c in plan_axis(width, tile, margin)]
