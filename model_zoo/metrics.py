"""Fidelity metrics on uint8 RGB images: PSNR, SSIM and a colour-difference measure.

All metrics ignore a border of ``shave`` pixels (conventionally the scale factor),
where every method, interpolation or network, lacks context.
"""

from __future__ import annotations

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity


def _pair(pred: np.ndarray, target: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {target.shape}")
    if shave:
        pred, target = pred[shave:-shave, shave:-shave], target[shave:-shave, shave:-shave]
    return pred, target


def psnr(pred: np.ndarray, target: np.ndarray, shave: int = 0) -> float:
    """Peak signal-to-noise ratio in dB over RGB, 8-bit peak."""
    pred, target = _pair(pred, target, shave)
    mse = np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def ssim(pred: np.ndarray, target: np.ndarray, shave: int = 0) -> float:
    """Mean SSIM over RGB channels (Gaussian window sigma 1.5, as in Wang et al. 2004)."""
    pred, target = _pair(pred, target, shave)
    return float(structural_similarity(pred, target, channel_axis=2, data_range=255,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def delta_e(pred: np.ndarray, target: np.ndarray, shave: int = 0) -> float:
    """Mean CIEDE2000 colour difference (lower is better; ~1 is just noticeable)."""
    pred, target = _pair(pred, target, shave)
    return float(np.mean(deltaE_ciede2000(rgb2lab(target), rgb2lab(pred))))
