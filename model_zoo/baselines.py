"""Classical interpolation baselines, via Pillow (the reference implementations viewers use)."""

from __future__ import annotations

import numpy as np
from PIL import Image

METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def interpolate(image: np.ndarray, scale: int, method: str) -> np.ndarray:
    """Upscale an (H, W, 3) uint8 image by an integer ``scale`` with a classical filter."""
    try:
        resample = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}") from None
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * scale, h * scale), resample))
