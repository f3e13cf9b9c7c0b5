"""Pen and ink marks by colour: inks are hues or darkness that H&E rarely produces.

* green/teal ink: hue 70-200 deg, clearly saturated - nothing in H&E is green;
* blue ink: hue 200-235 deg, strongly saturated, not dark (haematoxylin sits at 240-320 deg,
  and even blue-tinted nuclei are darker);
* red ink: hue within 12 deg of pure red and strongly saturated (eosin is pink, 320-350 deg);
* black ink: very dark and near neutral (the darkest nuclei stay clearly purple).
Blue, red and black have look-alikes in tissue - blue-tinted or very dark nuclei, red blood
cells, pigment - which are small and compact, so in those colours only large blobs or long
strokes are ink (``PenConfig``), and where the pixel size is known only those of a marker's size
(a vessel of red cells or a pigment deposit seen at 40x is large in the image, not on the
glass). Ink is never tissue, and a slide mostly covered by it is not judgeable
(quality/judgeable.py).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops
from skimage.morphology import disk

from quality.artefacts import Detection, regions_from_mask
from quality.colourspace import hue_degrees, value_saturation
from quality.config import PenConfig


class PenDetector:
    name = "pen_marks"

    def __init__(self, config: PenConfig = PenConfig()) -> None:
        self.config = config

    def colours(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Per-pixel masks of each ink colour."""
        hue = hue_degrees(rgb)
        value, saturation = value_saturation(rgb)
        return {"green": (hue >= 70) & (hue <= 200) & (saturation > 0.2) & (value < 0.92),
                "blue": (hue > 200) & (hue <= 235) & (saturation > 0.45) & (value > 0.3),
                "red": ((hue >= 348) | (hue <= 12)) & (saturation > 0.55) & (value > 0.25),
                "black": (value < 0.2) & (saturation < 0.5)}  # marker black is near neutral; dark nuclei are not

    def ink_classes(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(green ink, ink colours that cells share: blue, red, black) per pixel."""
        c = self.colours(rgb)
        return c["green"], c["blue"] | c["red"] | c["black"]

    def colour_and_black(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(coloured ink: green, blue, red; black) per pixel."""
        c = self.colours(rgb)
        return c["green"] | c["blue"] | c["red"], c["black"]

    def ink_pixels(self, rgb: np.ndarray) -> np.ndarray:
        green, cell_coloured = self.ink_classes(rgb)
        return green | cell_coloured

    def detect(self, rgb: np.ndarray, tissue: np.ndarray, pixel_size: float | None = None) -> Detection:
        green, cell_coloured = self.ink_classes(rgb)
        size = rgb.shape[0] * rgb.shape[1]
        min_px = max(16, int(self.config.min_region_fraction * size))
        ink = _clean(green, min_px) | self._not_cells(_clean(cell_coloured, 16), max(rgb.shape[:2]), pixel_size)
        mask, regions = regions_from_mask(ink, min_px)
        return Detection(mask, regions)

    def _not_cells(self, mask: np.ndarray, long_side: int, pixel_size: float | None) -> np.ndarray:
        """Keep large blobs and long strokes; drop nucleus-, red-cell- and pigment-sized bits."""
        labels, count = ndi.label(mask, structure=np.ones((3, 3)))
        if not count:
            return mask
        c = self.config
        mm = pixel_size / 1000 if pixel_size else None  # then a marker's size on the glass too
        keep = np.zeros(count + 1, bool)
        for region in regionprops(labels):
            blob = region.area >= c.min_blob_fraction * mask.size
            length, width = region.axis_major_length, max(region.axis_minor_length, 1.0)
            stroke = length >= c.min_stroke_length * long_side and length >= 4 * width
            if mm is not None:
                blob = blob and region.area * mm * mm >= c.min_blob_mm2
                stroke = stroke and length * mm >= c.min_stroke_mm
            keep[region.label] = blob or stroke
        return keep[labels]


def _clean(mask: np.ndarray, min_px: int) -> np.ndarray:
    mask = ndi.binary_closing(mask, structure=disk(2))
    mask = ndi.binary_opening(mask, structure=disk(1))
    return regions_from_mask(mask, min_px)[0]
