"""Consistency of a computed tile with what was measured: the HR tile box-downsampled back
to the stored magnification, compared with the stored LR pixels it was computed from (PSNR).

Super-resolution may invent detail, but the stored LR is what the scanner measured: a good
reconstruction, integrated over each LR pixel's footprint the way the optics and the LR
storage do (``model_zoo.degradation``: mean pooling), gives the LR back. A tile that does
not has content the measurement does not support (a hallucination, a misplaced or stale
tile, a model fault), wherever its fidelity to an unknown 40x cannot be checked.
"""

from __future__ import annotations

import numpy as np

from model_zoo.degradation import box_downsample, to_uint8
from model_zoo.metrics import psnr

# Identical images have infinite PSNR; a finite cap keeps the value JSON- and
# metadata-friendly and far above anything a threshold would flag.
CAP_DB = 99.0
DECIMALS = 2  # stored and published rounded: a hundredth of a dB is far below any decision


def consistency_db(hr_tile: np.ndarray, lr_core: np.ndarray, scale: int) -> float:
    """PSNR in dB (8-bit peak, over RGB) of ``hr_tile`` box-downsampled by ``scale`` against
    ``lr_core``, the LR pixels the tile covers (without the model's context margin).

    Only the LR pixels both cover are compared, so a partial edge tile (or one padded past the
    slide's edge) is judged on its real pixels alone.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    for name, image in (("HR tile", hr_tile), ("LR core", lr_core)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{name} must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    rows = min(hr_tile.shape[0] // scale, lr_core.shape[0])
    cols = min(hr_tile.shape[1] // scale, lr_core.shape[1])
    if rows == 0 or cols == 0:
        raise ValueError(f"HR tile {hr_tile.shape[:2]} at x{scale} and LR core {lr_core.shape[:2]} share no pixel")
    # Rounded to 8 bits like the stored LR, so a perfect reconstruction scores the cap.
    down = to_uint8(box_downsample(hr_tile[: rows * scale, : cols * scale], scale))
    return round(min(CAP_DB, psnr(down, lr_core[:rows, :cols])), DECIMALS)  # psnr: inf when identical
