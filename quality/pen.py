"""Pen and ink marks by colour: inks are hues or darkness that H&E never produces.

* green/teal ink: hue 70-200 deg, clearly saturated;
* blue ink: hue 200-235 deg, strongly saturated (haematoxylin sits at 240-300 deg and is
  less saturated);
* red ink: hue within 12 deg of pure red and strongly saturated (eosin is pink, hue
  320-350 deg, and paler);
* black ink: very dark regardless of hue, in blobs wider than nuclei.
Small specks (nuclei, red cells, debris) are removed by an area floor.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk

from quality.artefacts import Detection, regions_from_mask
from quality.colourspace import hue_degrees, value_saturation
from quality.config import PenConfig


class PenDetector:
    name = "pen_marks"

    def __init__(self, config: PenConfig = PenConfig()) -> None:
        self.config = config

    def ink_pixels(self, rgb: np.ndarray) -> np.ndarray:
        hue = hue_degrees(rgb)
        value, saturation = value_saturation(rgb)
        green = (hue >= 70) & (hue <= 200) & (saturation > 0.2) & (value < 0.92)
        blue = (hue > 200) & (hue <= 235) & (saturation > 0.45)
        red = ((hue >= 348) | (hue <= 12)) & (saturation > 0.55) & (value > 0.25)
        black = value < 0.2
        return green | blue | red | black

    def detect(self, rgb: np.ndarray, tissue: np.ndarray) -> Detection:
        ink = self.ink_pixels(rgb)
        ink = ndi.binary_closing(ink, structure=disk(2))
        ink = ndi.binary_opening(ink, structure=disk(1))
        min_px = max(16, int(self.config.min_region_fraction * ink.size))
        mask, regions = regions_from_mask(ink, min_px)
        return Detection(mask, regions)
