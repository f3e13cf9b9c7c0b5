"""Tissue mask: where there is something to judge. Glass is bright and unsaturated; anything
darker or more saturated is tissue (or ink/debris, which the other detectors name).
Same idea as HistoQC's LightDark/Saturation modules, with fixed documented thresholds."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from quality.colourspace import luminance, value_saturation
from quality.config import TissueConfig


def tissue_mask(rgb: np.ndarray, config: TissueConfig = TissueConfig()) -> np.ndarray:
    """Boolean (H, W) tissue mask with specks removed and small holes (nuclei gaps) filled."""
    raw = pixel_tissue(rgb, config)
    # Opening removes one- and two-pixel lines (coverslip edges, scratches, hairs), which are
    # not tissue however long they are.
    raw = ndi.binary_opening(raw, structure=np.ones((3, 3), bool))
    min_size = max(4, int(config.min_object_fraction * raw.size))
    labels, count = ndi.label(raw)
    if count:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_size
        keep[0] = False
        raw = keep[labels]
    holes = ndi.binary_fill_holes(raw) & ~raw
    labels, count = ndi.label(holes)
    if count:  # fill only small holes: lumens and fat vacuoles stay glass-like but are tissue
        sizes = np.bincount(labels.ravel())
        small = sizes <= min_size * 4
        small[0] = False
        raw = raw | small[labels]
    return raw


def pixel_tissue(rgb: np.ndarray, config: TissueConfig = TissueConfig()) -> np.ndarray:
    """Per-pixel tissue test without clean-up (cheap; used per tile)."""
    _, saturation = value_saturation(rgb)
    return (luminance(rgb) < config.max_glass_gray) | (saturation > config.min_saturation)
