"""Training samples for ``FoldNet``: each clean image as a negative (as scanned and with another
lab's staining), and synthetic folds painted onto it as positives, with the generator's band as
the per-cell target.

Seeds: each image's variants come from ``np.random.default_rng([SEED_BASE + seed, index])``,
a stream the evaluation (``default_rng(7)``) never draws, so the held-out synthetic folds are
not the ones trained on even for the shipped weights' own images.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quality import synthetic
from quality.datasets import CleanImage
from quality.fold_inputs import cell_target, fold_inputs, padded
from quality.tissue import tissue_mask

SEED_BASE = 1000
FOLDS_PER_IMAGE = 3


@dataclass(frozen=True)
class Sample:
    source: str
    name: str
    inputs: np.ndarray  # float16 (CHANNELS, H, W) on the input grid
    target: np.ndarray  # uint8 (H / 2, W / 2): fold cells
    weight: np.ndarray  # uint8 (H / 2, W / 2): cells with tissue (the loss counts only these)

    @property
    def positive(self) -> bool:
        return bool(self.target.any())


def _sample(image: CleanImage, rgb: np.ndarray, band: np.ndarray | None) -> Sample:
    tissue = tissue_mask(rgb)
    band = np.zeros(tissue.shape, bool) if band is None else band
    rgb, tissue = padded(rgb, tissue)
    band = np.pad(band, ((0, tissue.shape[0] - band.shape[0]), (0, tissue.shape[1] - band.shape[1])))
    target, weight = cell_target(band, tissue)
    return Sample(image.source, image.name, fold_inputs(rgb, tissue).astype(np.float16),
                  target.astype(np.uint8), weight.astype(np.uint8))


def samples_of(image: CleanImage, index: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng([SEED_BASE + seed, index])
    clean = image.load()
    stained = synthetic.stain_variation(clean, *map(float, rng.uniform(0.7, 1.4, size=2)))
    out = [_sample(image, clean, None), _sample(image, stained, None)]
    for i in range(FOLDS_PER_IMAGE):
        folded, band = synthetic.add_fold(stained if i == FOLDS_PER_IMAGE - 1 else clean, rng)
        out.append(_sample(image, folded, band))
    return out


def build_samples(images: list[CleanImage], seed: int = 0, cache: Path | None = None) -> list[Sample]:
    """Samples of every image (index = position in ``images``, so seeds do not depend on which
    half is trained); ``cache`` keeps them between runs (delete it after changing the inputs)."""
    if cache is not None and cache.is_file():
        with cache.open("rb") as f:
            return pickle.load(f)  # noqa: S301 - our own file
    samples = [s for index, image in enumerate(images) for s in samples_of(image, index, seed)]
    if cache is not None:
        with cache.open("wb") as f:
            pickle.dump(samples, f)
    return samples
