"""Tissue folds: the section lies over itself along a band, so there the tissue is two layers
thick - darker in *both* stains than the same tissue beside it (Palokangas et al. 2007,
Bautista & Yagi 2010), and showing both layers' texture rather than a smooth dense mass.

The first version compared stain densities with the slide's median and fired on dense
epithelium (colon crypts, a duct at the image edge), lymphoid aggregates and keratin: tissue
that is dense by nature. Here every candidate is compared with *the ring of tissue around it*:

1. work on a grid of ``smoothing_px / 4`` px blocks (speed; nuclei are erased by smoothing);
2. candidates: smoothed optical density > ``relative_od`` x its tissue median;
3. per candidate region, haematoxylin and eosin inside vs. in the surrounding ring: both must
   rise by ``min_ring_ratio`` and by similar factors (epithelium and lymphocytes raise
   haematoxylin, keratin and collagen eosin - not both alike);
4. texture (coefficient of variation of OD) relative to the ring's >= ``min_texture_ratio``: a
   doubled layer keeps its texture; muscle and dense stroma are smooth;
5. it is a band (``min_elongation``) covering >= ``min_region_fraction`` of the tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.measure import regionprops

from quality.artefacts import Detection, Region
from quality.colourspace import optical_density
from quality.config import FoldConfig
from quality.fold_stains import doubled

EPS = 1e-4


@dataclass(frozen=True)
class StainGrid:
    """Block-averaged maps on the analysis grid: raw and smoothed H, E and OD, and tissue."""

    block: int
    haematoxylin: np.ndarray
    eosin: np.ndarray
    density: np.ndarray  # raw block means (texture)
    smooth_h: np.ndarray
    smooth_e: np.ndarray
    smooth_od: np.ndarray
    tissue: np.ndarray


@dataclass(frozen=True)
class FoldCandidate:
    mask: np.ndarray  # on the analysis grid
    h_ratio: float  # inside / ring
    e_ratio: float
    texture_ratio: float
    elongation: float
    tissue_share: float

    def is_fold(self, c: FoldConfig) -> bool:
        return (doubled(self.h_ratio, self.e_ratio, c.min_ring_ratio, c.max_stain_imbalance)
                and self.texture_ratio >= c.min_texture_ratio and self.elongation >= c.min_elongation
                and self.tissue_share >= c.min_region_fraction)


def block_mean(image: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (edges that do not fill a block are dropped)."""
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    return image[:h, :w].reshape(h // k, k, w // k, k, *image.shape[2:]).mean(axis=(1, 3))


class FoldDetector:
    name = "folds"

    def __init__(self, config: FoldConfig = FoldConfig()) -> None:
        self.config = config

    def stain_grid(self, rgb: np.ndarray, tissue: np.ndarray) -> StainGrid:
        k = max(1, round(self.config.smoothing_px / 4))
        sigma = self.config.smoothing_px / k
        hed = np.clip(rgb2hed(rgb), 0.0, None).astype(np.float32)  # negative amounts are unmixing noise
        h, e = block_mean(hed[..., 0], k), block_mean(hed[..., 1], k)
        od = block_mean(optical_density(rgb).mean(axis=-1), k)
        grid_tissue = block_mean(tissue.astype(np.float32), k) > 0.5
        smooth = [ndi.gaussian_filter(x, sigma) for x in (h, e, od)]
        return StainGrid(k, h, e, od, *smooth, grid_tissue)

    def candidates(self, grid: StainGrid) -> list[FoldCandidate]:
        c = self.config
        t = grid.tissue
        if t.sum() < 16:
            return []
        sigma = c.smoothing_px / grid.block
        dense = grid.smooth_od > c.relative_od * max(float(np.median(grid.smooth_od[t])), EPS)
        dense = ndi.binary_opening(dense & t)
        labels, count = ndi.label(dense)
        near, far = max(1, round(sigma / 2)), max(2, round(3 * sigma))
        found = []
        for region in regionprops(labels):
            if region.area < c.min_region_fraction * t.sum():
                continue
            inside = labels == region.label
            ring = ndi.binary_dilation(inside, iterations=far) & ~ndi.binary_dilation(inside, iterations=near)
            ring &= t & ~dense
            if ring.sum() < 10:
                continue  # dense all around: nothing to compare with (a whole-field fold is missed)
            found.append(FoldCandidate(
                inside,
                _ratio(grid.smooth_h, inside, ring), _ratio(grid.smooth_e, inside, ring),
                _cv(grid.density[inside]) / max(_cv(grid.density[ring]), EPS),
                region.axis_major_length / max(region.axis_minor_length, 1.0),
                region.area / t.sum()))
        return found

    def detect(self, rgb: np.ndarray, tissue: np.ndarray, pixel_size: float | None = None) -> Detection:
        # pixel_size unused: this detector judges in overview pixels (quality/EVALUATION.md)
        mask = np.zeros(tissue.shape, bool)
        if not tissue.any():
            return Detection(mask)
        grid = self.stain_grid(rgb, tissue)
        regions = []
        k = grid.block
        for candidate in self.candidates(grid):
            if not candidate.is_fold(self.config):
                continue
            full = np.kron(candidate.mask, np.ones((k, k), bool))
            mask[: full.shape[0], : full.shape[1]] |= full
            ys, xs = np.nonzero(candidate.mask)
            regions.append(Region(int(xs.min()) * k, int(ys.min()) * k, int(np.ptp(xs) + 1) * k, int(np.ptp(ys) + 1) * k,
                                  int(candidate.mask.sum()) * k * k, min(candidate.h_ratio, candidate.e_ratio)))
        return Detection(mask & tissue, regions)


def _ratio(values: np.ndarray, inside: np.ndarray, ring: np.ndarray) -> float:
    return float(np.median(values[inside]) / max(float(np.median(values[ring])), EPS))


def _cv(values: np.ndarray) -> float:
    return float(values.std() / max(float(values.mean()), EPS))
