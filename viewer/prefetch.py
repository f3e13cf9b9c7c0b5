"""Low-resolution reading mode (SPEC 4): what to compute for a viewport.

The tiles in view are asked for at interactive priority; a ring of neighbouring tiles (one
viewport wide on each side, capped; nearest first in fractions of the screen, so it reaches as
far sideways as up and down in screens) at a lower priority, so a pan usually lands on tiles
already computed. Pure geometry: which tiles, in which order (nearest the centre first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.events import TileRef
from schemas.layout import TILE_SIZE, tile_grid
from viewer.deepzoom import SlideView, TileOutOfRange

MAX_RING_TILES = 96  # about two 1920x1080 screens of 256-px tiles


@dataclass(frozen=True)
class ViewportTiles:
    level: int
    visible: list[TileRef]
    ring: list[TileRef]


def viewport_tiles(view: SlideView, level: int, x: int, y: int, width: int, height: int, *,
                   ring_screens: float = 1.0, max_ring: int = MAX_RING_TILES) -> ViewportTiles:
    """``x, y, width, height``: the viewport in pixels of ``level``; clipped to the level."""
    if view.kind(level) != "sr":
        return ViewportTiles(level, [], [])
    cols, rows = tile_grid(view.width, view.height, level)
    if width <= 0 or height <= 0:
        raise TileOutOfRange("viewport width and height must be positive")

    def span(start: int, length: int, count: int) -> range:
        first = max(0, start // TILE_SIZE)
        last = min(count - 1, (start + length - 1) // TILE_SIZE)
        return range(first, last + 1)

    vis_cols, vis_rows = span(x, width, cols), span(y, height, rows)
    visible = [TileRef(level=level, col=c, row=r) for r in vis_rows for c in vis_cols]
    pad_x, pad_y = math.ceil(width * ring_screens), math.ceil(height * ring_screens)
    ring_cols, ring_rows = span(x - pad_x, width + 2 * pad_x, cols), span(y - pad_y, height + 2 * pad_y, rows)
    shown = set(visible)
    cx, cy = (x + width / 2) / TILE_SIZE, (y + height / 2) / TILE_SIZE
    half_w, half_h = width / 2 / TILE_SIZE, height / 2 / TILE_SIZE

    def screens_away(t: TileRef) -> tuple[float, float]:
        # In fractions of the screen, not in tiles: a wide screen's ring reaches as far to the
        # sides (in screens) as above and below, so a pan in any direction finds the same share
        # of its new screen computed. Nearest in tiles breaks ties.
        dx, dy = t.col + 0.5 - cx, t.row + 0.5 - cy
        return max(abs(dx) / half_w, abs(dy) / half_h), dx * dx + dy * dy

    ring = sorted((TileRef(level=level, col=c, row=r) for r in ring_rows for c in ring_cols
                   if TileRef(level=level, col=c, row=r) not in shown), key=screens_away)
    return ViewportTiles(level, visible, ring[:max_ring])
