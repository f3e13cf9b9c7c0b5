"""Reading images from disk and validating arrays handed to the model zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def as_rgb_uint8(image: object, *, what: str = "image") -> np.ndarray:
    """Return an (H, W, 3) uint8 view of ``image``; RGBA loses its alpha channel.

    Everything else is refused with a ValueError that says what was wrong, so a bad
    request fails loudly instead of producing a silently wrong tile.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (8-bit RGB), got dtype {image.dtype}")
    if image.ndim != 3:
        raise ValueError(f"{what} must have shape (H, W, 3) RGB or (H, W, 4) RGBA, got {image.shape}"
                         " (grayscale is not supported)")
    channels = image.shape[2]
    if channels == 4:
        image = image[:, :, :3]
    elif channels != 3:
        raise ValueError(f"{what} must have 3 (RGB) or 4 (RGBA) channels, got {channels}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what} is empty: shape {image.shape}")
    return image


def load_rgb(path: Path) -> np.ndarray:
    """Read a TIFF or PNG/JPEG file as (H, W, 3) uint8 RGB (alpha dropped)."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        pixels = tifffile.imread(path)
    else:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGBA") if img.mode in ("RGBA", "LA", "P") else img.convert("RGB"))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(as_rgb_uint8(pixels, what=str(path)))
