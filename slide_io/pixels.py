"""Conversion of decoded pixel arrays to the one layout every reader returns: uint8 RGB (H, W, 3)."""

from __future__ import annotations

import numpy as np

from slide_io.errors import UnsupportedFormat

WHITE = 255  # glass: what regions outside the image are filled with


def to_rgb8(array: np.ndarray, *, name: str | None = None) -> np.ndarray:
    """uint8 RGB from gray, gray+alpha, RGB or RGBA in uint8/uint16. Alpha is dropped (it
    carries no tissue information in the formats we read; openslide's out-of-bounds alpha is
    handled by its reader)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise UnsupportedFormat(f"pixel array of shape {array.shape} is not a 2-D image", name=name)
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise UnsupportedFormat(f"pixel type {array.dtype} is not supported (uint8/uint16 only)", name=name)
    samples = array.shape[2]
    if samples in (1, 2):
        return np.repeat(array[:, :, :1], 3, axis=2)
    if samples in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise UnsupportedFormat(f"{samples} samples per pixel are not supported", name=name)


def blank(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), WHITE, dtype=np.uint8)
