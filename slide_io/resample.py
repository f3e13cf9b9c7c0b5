"""Exact area-averaging resampling (each output pixel is the mean of the input area it covers,
with fractional edge weights), for any reduction factor, done as two sparse matrix products.

This is the physically right model of a lower-magnification scan (a larger pixel integrates
more of the specimen) and it cannot alias, unlike point sampling.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

BAND_ROWS = 1024  # output rows per band: bounds the float working set of large images


def area_weights(out_start: int, n_out: int, scale: float, in_origin: int, n_in: int, in_total: int) -> sparse.csr_matrix:
    """(n_out, n_in) weights mapping input samples [in_origin, in_origin+n_in) to output samples
    [out_start, out_start+n_out), where output i covers input [i*scale, (i+1)*scale). Input
    beyond ``in_total`` (outside the image) gets no weight; rows are renormalised."""
    starts = (out_start + np.arange(n_out)) * scale
    ends = starts + scale
    span = int(np.ceil(scale)) + 1
    j = np.floor(starts).astype(np.int64)[:, None] + np.arange(span)[None, :]
    overlap = np.minimum(ends[:, None], j + 1) - np.maximum(starts[:, None], j)
    valid = (overlap > 0) & (j < min(in_total, in_origin + n_in)) & (j >= in_origin)
    overlap = np.where(valid, overlap, 0.0)
    totals = overlap.sum(axis=1, keepdims=True)
    overlap = overlap / np.where(totals > 0, totals, 1.0)
    rows = np.repeat(np.arange(n_out), span)
    cols = np.clip(j - in_origin, 0, max(n_in - 1, 0)).ravel()
    weights = sparse.csr_matrix((overlap.ravel().astype(np.float32), (rows, cols)), shape=(n_out, n_in))
    weights.eliminate_zeros()
    return weights


def resample_block(block: np.ndarray, wy: sparse.csr_matrix, wx: sparse.csr_matrix) -> np.ndarray:
    """Apply row weights ``wy`` and column weights ``wx`` to an (H, W, C) block."""
    h, w, c = block.shape
    rows = wy @ block.reshape(h, w * c).astype(np.float32)  # (out_h, W*C)
    out_h = rows.shape[0]
    cols = wx @ rows.reshape(out_h, w, c).transpose(1, 0, 2).reshape(w, out_h * c)  # (out_w, out_h*C)
    out = cols.reshape(-1, out_h, c).transpose(1, 0, 2)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def area_resize(pixels: np.ndarray, out_width: int, out_height: int) -> np.ndarray:
    """Downsample an (H, W, C) uint8 image to (out_height, out_width) by area averaging."""
    h, w = pixels.shape[:2]
    if (out_width, out_height) == (w, h):
        return pixels.copy()
    if out_width > w or out_height > h:
        raise ValueError(f"area_resize only reduces: {w}x{h} -> {out_width}x{out_height}")
    sy, sx = h / out_height, w / out_width
    wx = area_weights(0, out_width, sx, 0, w, w)
    out = np.empty((out_height, out_width, pixels.shape[2]), dtype=np.uint8)
    for r0 in range(0, out_height, BAND_ROWS):
        n = min(BAND_ROWS, out_height - r0)
        i0 = int(np.floor(r0 * sy))
        i1 = min(h, int(np.ceil((r0 + n) * sy)) + 1)
        wy = area_weights(r0, n, sy, i0, i1 - i0, h)
        out[r0 : r0 + n] = resample_block(pixels[i0:i1], wy, wx)
    return out


def halve(pixels: np.ndarray) -> np.ndarray:
    """Next pyramid level: 2x area average, odd sizes rounded up."""
    h, w = pixels.shape[:2]
    return area_resize(pixels, max(1, -(-w // 2)), max(1, -(-h // 2)))
