"""The analysis tile grid and which tiles are judged (all tissue tiles, or a sample)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quality.config import SamplingConfig


@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    x: int
    y: int
    width: int
    height: int
    tissue_fraction: float


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """(rows, cols); edge tiles shorter than half a tile are merged into their neighbour."""
    cols = max(1, round(width / tile_size))
    rows = max(1, round(height / tile_size))
    return rows, cols


def tiles_with_tissue(tissue_overview: np.ndarray, width: int, height: int, tile_size: int,
                      min_fraction: float) -> tuple[tuple[int, int], list[Tile]]:
    """Tiles of the level-0 image whose tissue share (read from the overview mask) is at least
    ``min_fraction``. Tile edges are spread evenly so no sliver tiles occur."""
    rows, cols = tile_grid(width, height, tile_size)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    oh, ow = tissue_overview.shape
    sx, sy = ow / width, oh / height
    tiles = []
    for r in range(rows):
        for c in range(cols):
            ox0, ox1 = int(xs[c] * sx), max(int(xs[c] * sx) + 1, int(math.ceil(xs[c + 1] * sx)))
            oy0, oy1 = int(ys[r] * sy), max(int(ys[r] * sy) + 1, int(math.ceil(ys[r + 1] * sy)))
            fraction = float(tissue_overview[oy0:oy1, ox0:ox1].mean())
            if fraction >= min_fraction:
                tiles.append(Tile(r, c, int(xs[c]), int(ys[r]), int(xs[c + 1] - xs[c]), int(ys[r + 1] - ys[r]), fraction))
    return (rows, cols), tiles


def select_tiles(tiles: list[Tile], config: SamplingConfig) -> list[Tile]:
    """All tiles in ``full`` mode; in ``sampled`` mode a seeded random subset, spread over the
    slide by drawing from the tiles in a shuffled order (no spatial bias)."""
    if config.mode == "full" or len(tiles) <= config.min_tiles:
        return list(tiles)
    count = max(config.min_tiles, math.ceil(config.fraction * len(tiles)))
    if count >= len(tiles):
        return list(tiles)
    order = np.random.default_rng(config.seed).permutation(len(tiles))[:count]
    return [tiles[i] for i in sorted(order)]
