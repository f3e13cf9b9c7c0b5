"""Build the shipped colour standard from every clean H&E image in ../shared/data.

    python -m quality.build_standard [--out quality/standards/he_default.json]

A lab replaces it with one built from its own accepted slides (``quality.standard.build`` on
their descriptors, which ``run_qc`` reports in the colour check's details) and keeps it current
with ``quality.standard.updated`` as slides pass.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.settings import get_settings
from quality.config import QcConfig
from quality.datasets import CleanImage, clean_images
from quality.qc import measure
from quality.standard import SHIPPED, ColourStandard, build, save_standard

# Describing colour needs no standard (there may be none yet): any other metric skips loading it.
DESCRIBE = QcConfig(colour={"metric": "histogram_distance"})


def descriptor_of(pixels: np.ndarray, config: QcConfig = DESCRIBE) -> np.ndarray:
    """The colour descriptor ``run_qc`` computes for this image."""
    m = measure(pixels, config, detectors=[])
    return m.profile.descriptor() if m.profile is not None else np.full(9, np.nan)


def standard_from(images: Sequence[CleanImage], name: str = "he_default") -> ColourStandard:
    descriptors = np.array([descriptor_of(image.load()) for image in images])
    return build(descriptors, [image.source for image in images], name=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=get_settings().shared_data)
    parser.add_argument("--out", type=Path, default=SHIPPED)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    standard = standard_from(clean_images(args.data))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_standard(standard, args.out)
    print(f"{standard.name}: {standard.count:.0f} slides from {len(standard.sources)} sources, "
          f"calibrated scale {standard.scale:.2f} -> {args.out}")


if __name__ == "__main__":
    main()
