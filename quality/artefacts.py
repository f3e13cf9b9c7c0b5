"""Localised artefact detectors behind one interface, so a trained network (the patent names
Faster R-CNN / CenterNet / YOLO) can replace the classical detectors here without touching
``run_qc``: implement ``Detector.detect(rgb, tissue) -> Detection``.

* ``FoldDetector`` - a fold lays tissue over itself, so optical density roughly doubles over
  a band (the density/saturation cue of Palokangas et al. 2007 and Bautista & Yagi 2010).
  Doubling raises *both* stains, in about the slide's own proportion, so the image is
  unmixed into haematoxylin and eosin (Ruifrok colour deconvolution) and each is compared
  with the slide's own median tissue density. Tissue that is dense in one stain only - keratin
  and granular layer (haematoxylin-heavy here), collagen, out-of-focus nuclei - is not a fold.
  Nuclei are erased by smoothing first; a region must also be dark in absolute terms and be
  elongated (a band, not a blob).
* ``BubbleDetector`` - an air bubble under the cover slip shows as a thin, dark, unstained
  (grey) rim that follows a circle. Thin dark structures come from a black top-hat; each
  connected rim candidate is fitted with a circle by RANSAC and kept if the radius is
  plausible and the rim covers enough of the circumference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.measure import CircleModel, ransac, regionprops
from skimage.morphology import disk

from quality.colourspace import luminance, optical_density, value_saturation
from quality.config import BubbleConfig, FoldConfig


@dataclass(frozen=True)
class Region:
    """Axis-aligned box in the pixels of the image given to the detector."""

    x: int
    y: int
    width: int
    height: int
    area_px: int
    score: float

    def scaled(self, factor: float) -> Region:
        return Region(round(self.x * factor), round(self.y * factor), max(1, round(self.width * factor)),
                      max(1, round(self.height * factor)), round(self.area_px * factor**2), self.score)


@dataclass
class Detection:
    mask: np.ndarray  # bool (H, W): where the artefact is
    regions: list[Region] = field(default_factory=list)

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray, tissue: np.ndarray) -> Detection:
        """Find the artefact in an (H, W, 3) uint8 image given its tissue mask."""
        ...


def regions_from_mask(mask: np.ndarray, min_px: int, score_map: np.ndarray | None = None) -> tuple[np.ndarray, list[Region]]:
    """Drop components smaller than ``min_px``; return the cleaned mask and one box each."""
    labels, count = ndi.label(mask, structure=np.ones((3, 3)))
    if not count:
        return mask, []
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    regions = []
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None or not keep[index]:
            continue
        ys, xs = box
        score = float(score_map[box][labels[box] == index].mean()) if score_map is not None else 1.0
        regions.append(Region(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start, int(sizes[index]), score))
    return keep[labels], regions


class FoldDetector:
    name = "folds"

    def __init__(self, config: FoldConfig = FoldConfig()) -> None:
        self.config = config

    def stain_maps(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Haematoxylin, eosin and mean optical density, smoothed enough to erase nuclei. Glass
        dilutes them at tissue borders, which suppresses edge effects."""
        sigma = self.config.smoothing_px
        hed = np.clip(rgb2hed(rgb), 0.0, None)  # negative stain amounts are unmixing noise
        haematoxylin = ndi.gaussian_filter(hed[..., 0].astype(np.float32), sigma)
        eosin = ndi.gaussian_filter(hed[..., 1].astype(np.float32), sigma)
        density = ndi.gaussian_filter(optical_density(rgb).mean(axis=-1), sigma)
        return haematoxylin, eosin, density

    def fold_likeness(self, rgb: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel candidate mask and score (the weaker stain's multiple of its slide median)."""
        c = self.config
        haematoxylin, eosin, density = self.stain_maps(rgb)
        h_ratio = haematoxylin / max(float(np.median(haematoxylin[tissue])), 1e-6)
        e_ratio = eosin / max(float(np.median(eosin[tissue])), 1e-6)
        both_doubled = (h_ratio > c.relative_od) & (e_ratio > c.relative_od)
        # Two layers of the same tissue keep its stain proportion; one-stain-heavy tissue does not.
        balanced = (e_ratio < c.max_stain_imbalance * h_ratio) & (h_ratio < c.max_stain_imbalance * e_ratio)
        candidates = both_doubled & balanced & (density > c.min_od) & tissue
        return candidates, np.minimum(h_ratio, e_ratio)

    def detect(self, rgb: np.ndarray, tissue: np.ndarray) -> Detection:
        if not tissue.any():
            return Detection(np.zeros(tissue.shape, bool))
        candidates, score = self.fold_likeness(rgb, tissue)
        candidates = ndi.binary_opening(candidates, structure=disk(2))
        min_px = max(16, int(self.config.min_region_fraction * tissue.size))
        mask, _ = regions_from_mask(candidates, min_px)
        mask = self._elongated_only(mask)
        return Detection(mask, regions_from_mask(mask, min_px, score)[1])

    def _elongated_only(self, mask: np.ndarray) -> np.ndarray:
        """Folds are bands; dense cell clusters that pass the density test are blobs."""
        labels, count = ndi.label(mask, structure=np.ones((3, 3)))
        if not count:
            return mask
        keep = np.zeros(count + 1, bool)
        for region in regionprops(labels):
            keep[region.label] = region.axis_major_length >= self.config.min_elongation * max(region.axis_minor_length, 1.0)
        return keep[labels]


class BubbleDetector:
    name = "bubbles"

    def __init__(self, config: BubbleConfig = BubbleConfig(), seed: int = 0) -> None:
        self.config = config
        self.seed = seed

    def rim_mask(self, rgb: np.ndarray) -> np.ndarray:
        c = self.config
        gray = luminance(rgb)
        _, saturation = value_saturation(rgb)
        size = 2 * c.rim_width_px + 1
        tophat = ndi.grey_closing(gray, size=(size, size)) - gray
        return (tophat > 0.08) & (gray < c.max_rim_gray) & (saturation < c.max_rim_saturation)

    def detect(self, rgb: np.ndarray, tissue: np.ndarray) -> Detection:
        c = self.config
        rim = self.rim_mask(rgb)
        h, w = rim.shape
        short = min(h, w)
        r_min, r_max = c.min_radius_fraction * short, c.max_radius_fraction * short
        labels, count = ndi.label(rim, structure=np.ones((3, 3)))
        mask = np.zeros((h, w), bool)
        regions: list[Region] = []
        if not count:
            return Detection(mask, regions)
        # A rim crossing dark tissue breaks into pieces: fit circles to all rim pixels at once
        # (sequential RANSAC), dropping only specks.
        sizes = np.bincount(labels.ravel())
        keep = sizes >= 12
        keep[0] = False
        ys, xs = np.nonzero(keep[labels])
        points = np.column_stack([xs, ys]).astype(float)
        rng = np.random.default_rng(self.seed)
        yy, xx = np.ogrid[:h, :w]
        for _ in range(c.max_circles):
            circle = self._fit_circle(points, r_min, r_max, rng)
            if circle is None:
                break
            cx, cy, radius, arc, inliers = circle
            points = points[~inliers]
            if any(np.hypot(cx - r.x - r.width / 2, cy - r.y - r.height / 2) < 0.3 * radius for r in regions):
                continue  # the other edge of a rim already found
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
            if not (disc & tissue).any():
                continue  # a bubble over bare glass hides nothing
            mask |= disc
            x0, y0 = max(0, int(cx - radius)), max(0, int(cy - radius))
            x1, y1 = min(w, int(cx + radius) + 1), min(h, int(cy + radius) + 1)
            regions.append(Region(x0, y0, x1 - x0, y1 - y0, int(disc.sum()), arc))
        return Detection(mask, regions)

    def _fit_circle(self, points: np.ndarray, r_min: float, r_max: float, rng: np.random.Generator
                    ) -> tuple[float, float, float, float, np.ndarray] | None:
        """Best circle through the rim points, if it is a plausible bubble: radius in range and
        the rim densely covers at least ``min_arc_fraction`` of the circumference."""
        if len(points) < 2 * np.pi * r_min * self.config.min_arc_fraction:
            return None
        sample = points[rng.choice(len(points), 2000, replace=False)] if len(points) > 2000 else points
        tolerance = max(2.0, self.config.rim_width_px / 2)
        model, _ = ransac(sample, CircleModel, min_samples=3, residual_threshold=tolerance, max_trials=300, rng=rng)
        if model is None:
            return None
        (cx, cy), radius = (float(v) for v in model.center), float(model.radius)
        if not r_min <= radius <= r_max:
            return None
        distance = np.hypot(points[:, 0] - cx, points[:, 1] - cy)
        inliers = np.abs(distance - radius) <= tolerance
        bins = 72
        angles = np.arctan2(points[inliers, 1] - cy, points[inliers, 0] - cx)
        per_bin = np.bincount(((angles + np.pi) / (2 * np.pi) * bins).astype(int) % bins, minlength=bins)
        arc_per_bin = 2 * np.pi * radius / bins
        covered = float((per_bin >= 0.5 * arc_per_bin).mean())  # bins the rim actually runs through
        if covered < self.config.min_arc_fraction:
            return None
        return cx, cy, radius, covered, inliers
