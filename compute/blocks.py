"""Neighbouring tiles through the model as one LR window: one context margin per block.

A lone tile pays its context margin on every side: at x8 its 32-px LR core is read as a
72-px window, 5x the pixels. Adjacent tiles of one image level (``TileJob.block_group``)
are therefore computed as rectangular *blocks*: one window holds the block's cores plus one
margin, clipped at the slide edges and edge-padded exactly like a lone tile's window
(``compute.plan``). Every tile cut from a block sees the same LR pixels within the model's
reach as it does alone, so it is the same tile (bicubic: bit for bit; the model: within
float rounding) and blocks join without seams.

Planning is pure: tiles -> maximal rectangles of the tiles present -> each rectangle split
evenly into the blocks that fit the limits (tiles per window, estimated model memory per
window) with the fewest LR pixels in all. Tiles without a neighbour get a window of their
own, which is exactly the lone tile's window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from compute.plan import Rect, TileJob
from schemas.layout import TILE_SIZE

# (height, width, scale) of a padded LR window -> estimated peak bytes of one model pass
WindowBytes = Callable[[int, int, int], int]


@dataclass(frozen=True)
class Cells:
    """A rectangle of tiles in the level's tile grid."""

    col: int
    row: int
    cols: int
    rows: int

    def positions(self) -> list[tuple[int, int]]:
        """(col, row) of each cell, in reading order."""
        return [(c, r) for r in range(self.row, self.row + self.rows) for c in range(self.col, self.col + self.cols)]


@dataclass(frozen=True)
class BlockLimits:
    """How large one window may be."""

    max_tiles: int  # tiles per window (the engine uses its batch size: answers and preemption stay per batch)
    max_bytes: int  # estimated model memory of one window (keeps a model call within a memory budget)
    window_bytes: WindowBytes

    def fits(self, cols: int, rows: int, scale: int, margin: int) -> bool:
        if cols * rows == 1:
            return True  # a lone tile always runs, as it did before blocks
        core = TILE_SIZE // scale
        height, width = rows * core + 2 * margin, cols * core + 2 * margin
        return cols * rows <= self.max_tiles and self.window_bytes(height, width, scale) <= self.max_bytes


@dataclass(frozen=True)
class Window:
    """One model input: a block of tiles of one level, its LR read and padding."""

    effective_scale: int
    cells: Cells  # bounding rectangle of the tiles (cells without a job are context only)
    margin: int
    lr_read: Rect  # LR level-0 pixels to read (clipped to the slide)
    pad: tuple[int, int, int, int]  # left, top, right, bottom edge padding
    width: int  # the padded LR window is height x width
    height: int
    jobs: tuple[TileJob, ...]  # the tiles to cut out of the output

    @property
    def shape_key(self) -> tuple[int, int, int]:
        """Windows with equal keys can go through the model in one call."""
        return self.effective_scale, self.height, self.width

    @property
    def core(self) -> int:
        return TILE_SIZE // self.effective_scale

    def crop(self, job: TileJob) -> Rect:
        """The tile inside the upscaled window, in output pixels."""
        e, core = self.effective_scale, self.core
        x = (self.margin + (job.tile.col - self.cells.col) * core) * e
        y = (self.margin + (job.tile.row - self.cells.row) * core) * e
        return Rect(x, y, job.crop.width, job.crop.height)

    def offset_of(self, job: TileJob) -> tuple[int, int]:
        """Where the job's own lone-tile window starts inside this padded window (LR px)."""
        return (job.tile.col - self.cells.col) * self.core, (job.tile.row - self.cells.row) * self.core


def window_over(jobs: Sequence[TileJob]) -> Window:
    """The window of the bounding rectangle of ``jobs`` (one block group, one margin).

    The block's clipped read is the union of its tiles' clipped reads: the outermost
    tiles' reads reach exactly one margin beyond the block or stop at the slide edge.
    """
    if not jobs:
        raise ValueError("a window needs at least one tile")
    first = jobs[0]
    if any(j.block_group != first.block_group or j.margin != first.margin for j in jobs):
        raise ValueError("a window holds tiles of one image level and one margin")
    e, margin, core = first.effective_scale, first.margin, TILE_SIZE // first.effective_scale
    col0, row0 = min(j.tile.col for j in jobs), min(j.tile.row for j in jobs)
    cells = Cells(col0, row0, max(j.tile.col for j in jobs) - col0 + 1, max(j.tile.row for j in jobs) - row0 + 1)
    x0, y0 = min(j.lr_read.x for j in jobs), min(j.lr_read.y for j in jobs)
    x1 = max(j.lr_read.x + j.lr_read.width for j in jobs)
    y1 = max(j.lr_read.y + j.lr_read.height for j in jobs)
    width, height = cells.cols * core + 2 * margin, cells.rows * core + 2 * margin
    left, top = x0 - (col0 * core - margin), y0 - (row0 * core - margin)
    pad = (left, top, width - left - (x1 - x0), height - top - (y1 - y0))
    return Window(e, cells, margin, Rect(x0, y0, x1 - x0, y1 - y0), pad, width, height, tuple(jobs))


def plan_windows(jobs: Iterable[TileJob], limits: BlockLimits) -> list[Window]:
    """Windows covering ``jobs``, each tile in exactly one (a tile key given twice once)."""
    groups: dict[tuple[tuple[str, int, int, int], int], dict[tuple[int, int], TileJob]] = {}
    for job in jobs:
        groups.setdefault((job.block_group, job.margin), {}).setdefault((job.tile.col, job.tile.row), job)
    windows = []
    for cells in groups.values():
        sample = next(iter(cells.values()))
        e, margin = sample.effective_scale, sample.margin
        for rect in rectangles(set(cells)):
            for block in split(rect, e, margin, limits):
                windows.append(window_over([cells[c] for c in block.positions()]))
    return windows


def rectangles(cells: set[tuple[int, int]]) -> list[Cells]:
    """Cover ``cells`` (col, row) with disjoint rectangles: from the first cell in reading
    order, the largest rectangle of present cells (ties: the squarest), repeatedly."""
    left = set(cells)
    out = []
    while left:
        col, row = min(left, key=lambda cr: (cr[1], cr[0]))
        best, height = Cells(col, row, 1, 1), math.inf
        width = 0
        while (col + width, row) in left:
            column = 0
            while (col + width, row + column) in left and column < height:
                column += 1
            height, width = column, width + 1
            candidate = Cells(col, row, width, int(height))
            if (width * height, -abs(width - height)) > (best.cols * best.rows, -abs(best.cols - best.rows)):
                best = candidate
        left.difference_update(best.positions())
        out.append(best)
    return out


def split(rect: Cells, scale: int, margin: int, limits: BlockLimits) -> list[Cells]:
    """``rect`` as an even grid of blocks that fit ``limits``, with the fewest window
    pixels in all (each block pays its own margin); ties: the fewest blocks."""
    best: tuple[int, int, int, int] | None = None
    core = TILE_SIZE // scale
    for nx in range(1, rect.cols + 1):
        for ny in range(1, rect.rows + 1):
            if not limits.fits(math.ceil(rect.cols / nx), math.ceil(rect.rows / ny), scale, margin):
                continue
            pixels = (rect.cols * core + 2 * margin * nx) * (rect.rows * core + 2 * margin * ny)
            if best is None or (pixels, nx * ny) < best[:2]:
                best = (pixels, nx * ny, nx, ny)
    assert best is not None  # 1 x 1 blocks always fit
    _, _, nx, ny = best
    return [Cells(rect.col + x, rect.row + y, w, h)
            for y, h in _even(rect.rows, ny) for x, w in _even(rect.cols, nx)]


def _even(length: int, parts: int) -> list[tuple[int, int]]:
    """(offset, size) of ``parts`` pieces of ``length`` whose sizes differ by at most one."""
    base, extra = divmod(length, parts)
    sizes = [base + (1 if i < extra else 0) for i in range(parts)]
    return [(sum(sizes[:i]), size) for i, size in enumerate(sizes)]
