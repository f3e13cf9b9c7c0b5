"""The doubled-thickness signature, checked on each region the fold network marks: a second
layer of the same tissue raises haematoxylin *and* eosin against the tissue beside it, by
similar factors. Black pigment, haemorrhage (eosin only) and a dense cell or nucleus cluster
(haematoxylin only) are dark bands too, and the network trained on one half of the sources
takes some of them for folds on the other half (EVALUATION.md).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import hed_from_rgb

RING_NEAR, RING_FAR = 2, 12  # input cells (4 px) between a region and its ring, and the ring's reach
EPS = 1e-4


def stain_ratios(mean_od: np.ndarray, tissue: np.ndarray, region: np.ndarray, others: np.ndarray) -> tuple[float, float]:
    """Median haematoxylin and eosin inside ``region`` over the ring of tissue around it (other
    marked cells left out). Unmixing is linear in OD, so block means unmix like pixels."""
    stains = np.clip(mean_od @ hed_from_rgb[:, :2], 0.0, None)
    ring = ndi.binary_dilation(region, iterations=RING_FAR) & ~ndi.binary_dilation(region, iterations=RING_NEAR)
    ring &= tissue & ~others
    if ring.sum() < 10 or not region.any():
        return 1.0, 1.0  # nothing to compare with (a fold over the whole field): no doubling shown
    inside, around = np.median(stains[region], axis=0), np.median(stains[ring], axis=0)
    h, e = inside / np.maximum(around, EPS)
    return float(h), float(e)


def doubled(h_ratio: float, e_ratio: float, min_ratio: float, max_imbalance: float) -> bool:
    low, high = sorted((h_ratio, e_ratio))
    return low >= min_ratio and high <= max_imbalance * low
