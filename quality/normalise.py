"""Colour normalisation toward the standard image (SPEC 1 "correction" option).

* Reinhard et al. 2001: match the mean and standard deviation of each CIELAB channel of the
  tissue pixels to the reference's. Simple, fast, robust; moves every colour together.
* Macenko et al. 2009: estimate the two stain vectors (haematoxylin, eosin) from the
  optical-density plane spanned by the tissue, unmix, rescale each stain's concentration to
  the reference's 99th percentile, and remix with the reference's stain vectors. Changes stain
  colours separately; needs H&E-like input.

Glass (non-tissue) pixels are left as they are so backgrounds do not take a tint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quality.colour import ColourStats, colour_stats, hellinger_distance, mean_delta_e, mutual_information
from quality.colourspace import from_lab, optical_density, to_lab
from quality.config import ColourConfig, TissueConfig
from quality.tissue import tissue_mask

BAND_ROWS = 512  # rows converted at once: bounds the float working set on large slides
OD_BACKGROUND = 0.15  # Macenko's beta: pixels with less OD in any channel are ignored
ANGLE_PERCENTILE = 1.0  # Macenko's alpha (robust extreme angles)


@dataclass(frozen=True)
class NormalisationMetrics:
    method: str
    mutual_information_before: float
    mutual_information_after: float
    histogram_distance_before: float
    histogram_distance_after: float
    delta_e_before: float
    delta_e_after: float

    def as_dict(self) -> dict[str, float | str]:
        return dict(self.__dict__)


def reinhard(rgb: np.ndarray, tissue: np.ndarray, reference: ColourStats, source: ColourStats) -> np.ndarray:
    out = rgb.copy()
    scale = reference.lab_std / np.maximum(source.lab_std, 1e-3)
    for y in range(0, rgb.shape[0], BAND_ROWS):
        band, mask = rgb[y : y + BAND_ROWS], tissue[y : y + BAND_ROWS]
        if not mask.any():
            continue
        lab = to_lab(band[mask].reshape(-1, 1, 3)).reshape(-1, 3)
        lab = (lab - source.lab_mean) * scale + reference.lab_mean
        out[y : y + BAND_ROWS][mask] = from_lab(lab.reshape(-1, 1, 3)).reshape(-1, 3)
    return out


@dataclass(frozen=True)
class StainBasis:
    vectors: np.ndarray  # (2, 3) unit OD vectors: haematoxylin, eosin
    max_concentrations: np.ndarray  # (2,) 99th percentiles


def stain_basis(rgb: np.ndarray, tissue: np.ndarray, stride: int = 2) -> StainBasis:
    od = optical_density(rgb[::stride, ::stride])[tissue[::stride, ::stride]]
    od = od[(od > OD_BACKGROUND).all(axis=1)]
    if len(od) < 100:
        raise ValueError("too little stained tissue to estimate stain vectors")
    _, eigenvectors = np.linalg.eigh(np.cov(od.T))
    plane = eigenvectors[:, 1:3]  # the two largest
    plane = plane * np.where(plane[0:1] < 0, -1, 1)  # keep OD positive
    projected = od @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    lo, hi = np.percentile(angles, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    # Haematoxylin absorbs more red than eosin does: order by the red component.
    vectors = np.array([v1, v2] if v1[0] > v2[0] else [v2, v1])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    concentrations = np.linalg.lstsq(vectors.T, od.T, rcond=None)[0]
    return StainBasis(vectors, np.percentile(concentrations, 99, axis=1))


def macenko(rgb: np.ndarray, tissue: np.ndarray, target: StainBasis) -> np.ndarray:
    source = stain_basis(rgb, tissue)
    scale = target.max_concentrations / np.maximum(source.max_concentrations, 1e-6)
    out = rgb.copy()
    for y in range(0, rgb.shape[0], BAND_ROWS):
        band, mask = rgb[y : y + BAND_ROWS], tissue[y : y + BAND_ROWS]
        if not mask.any():
            continue
        od = optical_density(band[mask])
        concentrations = np.linalg.lstsq(source.vectors.T, od.T, rcond=None)[0] * scale[:, None]
        rebuilt = 256.0 * 10 ** (-(concentrations.T @ target.vectors)) - 1.0
        out[y : y + BAND_ROWS][mask] = np.clip(np.rint(rebuilt), 0, 255).astype(np.uint8)
    return out


def normalise(
    rgb: np.ndarray,
    reference_rgb: np.ndarray | None,
    reference: ColourStats,
    method: str = "reinhard",
    colour: ColourConfig = ColourConfig(),
    tissue_config: TissueConfig = TissueConfig(),
    tissue: np.ndarray | None = None,
) -> tuple[np.ndarray, NormalisationMetrics]:
    """Normalise ``rgb`` toward the reference; returns the new image and before/after metrics.
    Macenko needs the reference pixels (for its stain basis); Reinhard only its statistics."""
    tissue = tissue_mask(rgb, tissue_config) if tissue is None else tissue
    before = colour_stats(rgb, tissue, colour)
    if method == "reinhard":
        result = reinhard(rgb, tissue, reference, before)
    elif method == "macenko":
        if reference_rgb is None:
            raise ValueError("Macenko normalisation needs the reference image pixels")
        target = stain_basis(reference_rgb, tissue_mask(reference_rgb, tissue_config))
        result = macenko(rgb, tissue, target)
    else:
        raise ValueError(f"unknown normalisation method {method!r}")
    after = colour_stats(result, tissue, colour)
    metrics = NormalisationMetrics(
        method=method,
        mutual_information_before=mutual_information(before.histogram, reference.histogram),
        mutual_information_after=mutual_information(after.histogram, reference.histogram),
        histogram_distance_before=hellinger_distance(before.histogram, reference.histogram),
        histogram_distance_after=hellinger_distance(after.histogram, reference.histogram),
        delta_e_before=mean_delta_e(before, reference),
        delta_e_after=mean_delta_e(after, reference),
    )
    return result, metrics
