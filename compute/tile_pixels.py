"""Pixels in and out of the model for one tile job: padded LR window, cropped HR tile."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compute.plan import TileJob

# read(x, y, width, height) -> uint8 RGB (height, width, 3) of LR level 0
ReadRegion = Callable[[int, int, int, int], np.ndarray]


def lr_window(read: ReadRegion, job: TileJob) -> np.ndarray:
    """The job's LR window with context, edge-padded to ``input_side`` square."""
    r = job.lr_read
    pixels = read(r.x, r.y, r.width, r.height)
    if pixels.shape != (r.height, r.width, 3) or pixels.dtype != np.uint8:
        raise ValueError(f"reader returned {pixels.shape} {pixels.dtype}, expected ({r.height}, {r.width}, 3) uint8")
    left, top, right, bottom = job.pad
    if left or top or right or bottom:
        # Replicating the edge is what the model sees at a slide border (as if it ran on
        # the whole slide with replicate padding), so border tiles stay seamless too.
        pixels = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge")
    return pixels


def hr_tile(upscaled: np.ndarray, job: TileJob) -> np.ndarray:
    """The tile inside the model's output for the padded window."""
    expected = job.input_side * job.effective_scale
    if upscaled.shape[:2] != (expected, expected):
        raise ValueError(f"model output {upscaled.shape[:2]} for a {job.input_side}px window at "
                         f"x{job.effective_scale}; expected {expected}x{expected}")
    c = job.crop
    return np.ascontiguousarray(upscaled[c.y : c.y + c.height, c.x : c.x + c.width])
