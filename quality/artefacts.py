"""The interface of localised artefact detectors, so a trained network (the patent names
Faster R-CNN / CenterNet / YOLO) can replace the classical ones without touching ``run_qc``:
implement ``Detector.detect(rgb, tissue, pixel_size) -> Detection``. The classical detectors live in
``folds.py``, ``bubbles.py`` and ``pen.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage as ndi


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

    def detect(self, rgb: np.ndarray, tissue: np.ndarray, pixel_size: float | None = None) -> Detection:
        """Find the artefact in an (H, W, 3) uint8 image given its tissue mask; ``pixel_size``:
        microns per pixel of ``rgb`` when the slide states it (None: judge in pixels)."""
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
