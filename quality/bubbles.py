"""Air bubbles: under the cover slip a bubble shows as a thin, dark, *unstained* (grey) rim
that follows a circle. Thin dark structures come from a black top-hat; circles are fitted to
all rim pixels by sequential RANSAC and kept if the radius is plausible and the rim covers
enough of the circumference.

A pen circle drawn around a region is also a dark ring, and was fitted as a bubble. Ink has a
colour (or is darker than any refracting rim) and is drawn as a broad stroke: a circle whose
rim pixels are mostly ink by ``PenDetector``'s colour classes, or whose ring in the image is
ink for more than ``max_ink_share`` of its length, is not a bubble.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import CircleModel, ransac
from skimage.morphology import disk

from quality.artefacts import Detection, Region
from quality.colourspace import luminance, value_saturation
from quality.config import BubbleConfig, PenConfig
from quality.pen import PenDetector

RIM_CONTRAST = 0.02  # luminance: the rim is darker than both sides by at least this


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

    def ink_mask(self, rgb: np.ndarray) -> np.ndarray:
        """Ink: coloured ink anywhere, and black only in strokes broader than a bubble rim (a
        rim is as dark as black ink, but thin); widened by half a rim so a stroke's fringe
        counts too."""
        coloured, black = PenDetector(PenConfig()).colour_and_black(rgb)
        half = max(1, self.config.rim_width_px // 2)
        broad = ndi.binary_opening(black, structure=disk(half + 1))
        return ndi.binary_dilation(coloured | broad, iterations=half)

    def detect(self, rgb: np.ndarray, tissue: np.ndarray, pixel_size: float | None = None) -> Detection:
        # pixel_size unused: this detector judges in overview pixels (quality/EVALUATION.md)
        c = self.config
        rim = self.rim_mask(rgb)
        ink = self.ink_mask(rgb)
        gray = luminance(rgb)
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
            if self._ink_share(ink, cx, cy, radius) > c.max_ink_share:
                continue  # a pen circle, not a bubble
            if not self._thin_rim(gray, cx, cy, radius):
                continue  # the edge of dark blobs (pigment, debris), not a line
            mask |= disc
            x0, y0 = max(0, int(cx - radius)), max(0, int(cy - radius))
            x1, y1 = min(w, int(cx + radius) + 1), min(h, int(cy + radius) + 1)
            regions.append(Region(x0, y0, x1 - x0, y1 - y0, int(disc.sum()), arc))
        return Detection(mask, regions)

    def _thin_rim(self, gray: np.ndarray, cx: float, cy: float, radius: float) -> bool:
        """Ring profile: a refracting rim is a thin line, darker than the image a few rim widths
        inside *and* outside it (median over the circumference)."""
        width = self.config.rim_width_px
        angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)

        def ring(r: float) -> np.ndarray:
            xs = np.clip(np.rint(cx + r * np.cos(angles)).astype(int), 0, gray.shape[1] - 1)
            ys = np.clip(np.rint(cy + r * np.sin(angles)).astype(int), 0, gray.shape[0] - 1)
            return gray[ys, xs]

        on_rim = np.min([ring(radius + d) for d in np.arange(-width / 2, width / 2 + 1)], axis=0)
        inner, outer = ring(max(1.0, radius - 3 * width)), ring(radius + 3 * width)
        return bool(np.median(np.minimum(inner, outer) - on_rim) > RIM_CONTRAST)

    @staticmethod
    def _ink_share(ink: np.ndarray, cx: float, cy: float, radius: float) -> float:
        """Share of the circle's circumference that runs over ink."""
        angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
        xs = np.rint(cx + radius * np.cos(angles)).astype(int)
        ys = np.rint(cy + radius * np.sin(angles)).astype(int)
        inside = (xs >= 0) & (xs < ink.shape[1]) & (ys >= 0) & (ys < ink.shape[0])
        return float(ink[ys[inside], xs[inside]].mean()) if inside.any() else 0.0

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
