"""The learned fold detector (``FoldConfig.detector = "learned"``): ``FoldNet`` gives every
8x8-px cell of the overview a fold probability from the band around it; a fold is a connected
region above ``learned_probability`` covering >= ``min_region_fraction`` of the tissue whose
haematoxylin and eosin both rise against the tissue around it, alike (quality/fold_stains.py).

Trained by ``python -m quality.train_folds`` on synthetic folds (quality/synthetic.py) painted
onto clean tissue, with the clean images - dense epithelium, lymphoid tissue, keratin - as
negatives. ``WEIGHTS`` registers the files under quality/models/ with their sha256: ``all``
is shipped (every source), ``half1`` / ``half2`` are trained on one half of the sources only
(quality/datasets.py ``FOLDS``) for the held-out evaluation.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from quality.artefacts import Detection, regions_from_mask
from quality.config import FoldConfig
from quality.fold_inputs import BLOCK, CELL, STRIDE, inputs_and_od, padded
from quality.fold_stains import doubled, stain_ratios
from slide_io.pixels import to_rgb8

if TYPE_CHECKING:
    from quality.fold_net import FoldNet

MODELS_DIR = Path(__file__).resolve().parent / "models"
# name -> (file under MODELS_DIR, sha256), as ``python -m quality.train_folds`` printed them.
WEIGHTS: dict[str, tuple[str, str]] = {
    "all": ("folds-all.pt", "6ee425b15f293ad7830beb63e0d1dd438a2964ca7ee3e7fbe69a03289c6e8b1c"),
    "half1": ("folds-half1.pt", "d8c2bf949a4d71610a63c4a03407faa4f04e53b16b8f457f9da33448f40e3a46"),
    "half2": ("folds-half2.pt", "a4d0f8cf992f23bb8178603389e9081011ac67d5dc355d5f7ea5bdc7fe507987"),
}
MIN_SIDE = 4 * CELL  # smaller images hold no band with two edges


@lru_cache(maxsize=4)
def _network(path: Path, sha256: str | None) -> FoldNet:
    from quality.fold_net import load_fold_net  # torch only when the learned detector is used

    return load_fold_net(path, sha256)


def weights_file(name: str, models_dir: Path = MODELS_DIR) -> tuple[Path, str]:
    try:
        file, sha256 = WEIGHTS[name]
    except KeyError:
        raise KeyError(f"unknown fold weights {name!r}; registered: {sorted(WEIGHTS)}") from None
    return Path(models_dir) / file, sha256


class LearnedFoldDetector:
    name = "folds"

    def __init__(self, config: FoldConfig = FoldConfig(), weights: str | Path | None = None,
                 models_dir: Path = MODELS_DIR) -> None:
        """``weights``: a registered name (checksum-verified; default ``config.learned_weights``)
        or the path of an unregistered file (training, experiments)."""
        self.config = config
        weights = weights if weights is not None else config.learned_weights
        if isinstance(weights, Path):
            self.path, self.sha256 = weights, None
        else:
            self.path, self.sha256 = weights_file(weights, models_dir)
        self.network = _network(self.path, self.sha256)  # fails here, not mid-slide, on bad weights

    def cells(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fold probability per output cell (CELL px), and block-mean OD and the mostly-tissue
        cells per input cell (BLOCK px), for an image and mask already ``padded`` to whole cells."""
        import torch

        inputs, mean_od, grid_tissue = inputs_and_od(image, mask)
        with torch.inference_mode():
            probability = torch.sigmoid(self.network(torch.from_numpy(inputs)[None]))[0].numpy()
        return probability, mean_od, grid_tissue

    def probability(self, rgb: np.ndarray, tissue: np.ndarray) -> np.ndarray:
        """Fold probability per overview pixel (float32, the image's shape)."""
        h, w = tissue.shape
        return _up(self.cells(*padded(rgb, tissue))[0], CELL)[:h, :w]

    def detect(self, rgb: np.ndarray, tissue: np.ndarray, pixel_size: float | None = None) -> Detection:
        # pixel_size unused: this detector judges in overview pixels (quality/EVALUATION.md)
        rgb = to_rgb8(np.asarray(rgb))  # greyscale, alpha and 16-bit as every reader returns them
        tissue = np.asarray(tissue, bool)
        if tissue.shape != rgb.shape[:2]:
            raise ValueError(f"tissue mask {tissue.shape} does not match the image {rgb.shape[:2]}")
        if not tissue.any() or min(tissue.shape) < MIN_SIDE:
            return Detection(np.zeros(tissue.shape, bool))
        c = self.config
        probability, mean_od, grid_tissue = self.cells(*padded(rgb, tissue))
        marked = _up(probability > c.learned_probability, STRIDE) & grid_tissue
        labels, count = ndi.label(marked, structure=np.ones((3, 3)))
        min_cells = c.min_region_fraction * grid_tissue.sum()
        kept = np.zeros_like(marked)
        for index in range(1, count + 1):
            region = labels == index
            if region.sum() >= min_cells and doubled(*stain_ratios(mean_od, grid_tissue, region, marked),
                                                     c.learned_min_ring_ratio, c.max_stain_imbalance):
                kept |= region
        h, w = tissue.shape
        found = _up(kept, BLOCK)[:h, :w] & tissue
        min_px = max(1, int(c.min_region_fraction * tissue.sum()))
        mask, regions = regions_from_mask(found, min_px, _up(probability, CELL)[:h, :w])
        return Detection(mask, regions)


def _up(cells: np.ndarray, k: int) -> np.ndarray:
    return np.kron(cells, np.ones((k, k), cells.dtype))
