"""Per-pixel colour quantities shared by the checks (all from uint8 RGB)."""

from __future__ import annotations

import numpy as np
from skimage.color import lab2rgb, rgb2lab

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def channel_max_min(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel max and min over the channels (elementwise ops: much faster than a
    reduction over the last axis)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (np.maximum(np.maximum(r, g), b).astype(np.float32),
            np.minimum(np.minimum(r, g), b).astype(np.float32))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma in 0..1, float32."""
    return (rgb.astype(np.float32) @ LUMA) / 255.0


def value_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV value and saturation in 0..1 (hue is not needed by most checks)."""
    mx, mn = channel_max_min(rgb)
    saturation = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1.0), 0.0)
    return mx / 255.0, saturation.astype(np.float32)


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in degrees 0..360 (0 for grey pixels)."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, mn = channel_max_min(x)
    delta = np.where(mx > mn, mx - mn, 1.0)
    hue = np.where(mx == r, (g - b) / delta % 6, np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4))
    return np.where(mx > mn, hue * 60.0, 0.0).astype(np.float32)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Beer-Lambert optical density per channel, -log10(I / I0) with I0 = 256 (float32)."""
    return -np.log10((rgb.astype(np.float32) + 1.0) / 256.0)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    return rgb2lab(rgb).astype(np.float32)


def from_lab(lab: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(lab2rgb(lab) * 255.0), 0, 255).astype(np.uint8)
