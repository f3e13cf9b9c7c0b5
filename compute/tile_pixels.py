"""Pixels in and out of the model: padded LR windows (one tile or a block of tiles), cropped HR tiles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compute.blocks import Window, window_over
from compute.plan import Rect, TileJob

# read(x, y, width, height) -> uint8 RGB (height, width, 3) of LR level 0
ReadRegion = Callable[[int, int, int, int], np.ndarray]


def _read_padded(read: ReadRegion, r: Rect, pad: tuple[int, int, int, int]) -> np.ndarray:
    pixels = read(r.x, r.y, r.width, r.height)
    if pixels.shape != (r.height, r.width, 3) or pixels.dtype != np.uint8:
        raise ValueError(f"reader returned {pixels.shape} {pixels.dtype}, expected ({r.height}, {r.width}, 3) uint8")
    left, top, right, bottom = pad
    if left or top or right or bottom:
        # Replicating the edge is what the model sees at a slide border (as if it ran on
        # the whole slide with replicate padding), so border tiles stay seamless too.
        pixels = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge")
    return pixels


def _crop(upscaled: np.ndarray, height: int, width: int, scale: int, c: Rect) -> np.ndarray:
    expected = (height * scale, width * scale)
    if upscaled.shape[:2] != expected:
        raise ValueError(f"model output {upscaled.shape[:2]} for a {height}x{width} window at x{scale}; "
                         f"expected {expected[0]}x{expected[1]}")
    return np.ascontiguousarray(upscaled[c.y : c.y + c.height, c.x : c.x + c.width])


def lr_window(read: ReadRegion, job: TileJob) -> np.ndarray:
    """The job's LR window with context, edge-padded to ``input_side`` square."""
    return _read_padded(read, job.lr_read, job.pad)


def hr_tile(upscaled: np.ndarray, job: TileJob) -> np.ndarray:
    """The tile inside the model's output for the padded window."""
    return _crop(upscaled, job.input_side, job.input_side, job.effective_scale, job.crop)


def block_window(read: ReadRegion, window: Window) -> np.ndarray:
    """The window's LR pixels with context, edge-padded to ``height`` x ``width``."""
    return _read_padded(read, window.lr_read, window.pad)


def block_tile(upscaled: np.ndarray, window: Window, job: TileJob) -> np.ndarray:
    """One tile cut out of the model's output for a window."""
    return _crop(upscaled, window.height, window.width, window.effective_scale, window.crop(job))

def lr_core(pixels: np.ndarray, window: Window, job: TileJob) -> np.ndarray:
    """The LR pixels one tile of a window shows (no context margin, no edge padding): what
    its HR tile must give back when box-downsampled (``compute.consistency``)."""
    e, c = window.effective_scale, window.crop(job)
    # Exact: tile origins and sizes are multiples of e (``compute.plan``).
    return pixels[c.y // e : (c.y + c.height) // e, c.x // e : (c.x + c.width) // e]


def lone_windows(pixels: np.ndarray, window: Window) -> list[tuple[Window, np.ndarray]]:
    """Each tile of a block with its own lone-tile window, cut from the block's padded pixels
    (both are the edge-extended slide over the same extent), to isolate a failing tile."""
    out = []
    for job in window.jobs:
        lone = window_over([job])
        x, y = window.offset_of(job)
        out.append((lone, pixels[y : y + lone.height, x : x + lone.width]))
    return out
