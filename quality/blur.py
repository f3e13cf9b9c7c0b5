"""Per-tile sharpness (three classic focus measures) and the blur map.

* ``laplacian_variance`` - variance of the 4-neighbour Laplacian (Pech-Pacheco et al. 2000;
  HistoQC's BlurDetectionModule uses the Laplacian too). Most sensitive to mild defocus.
* ``tenengrad`` - mean squared Sobel gradient magnitude (Krotkov 1987).
* ``spatial_frequency`` - sqrt(mean(dx^2) + mean(dy^2)) of first differences (Eskicioglu &
  Fisher 1995).

All on luminance in 0..1. Tiles are judged only where there is tissue: glass has no texture
and would always read as "blurred".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from quality.colourspace import luminance

METRICS = ("laplacian_variance", "tenengrad", "spatial_frequency")


@dataclass(frozen=True)
class TileSharpness:
    laplacian_variance: float
    tenengrad: float
    spatial_frequency: float

    def get(self, metric: str) -> float:
        return float(getattr(self, metric))


def tile_sharpness(rgb: np.ndarray) -> TileSharpness:
    gray = luminance(rgb)
    laplacian = ndi.laplace(gray)
    gx, gy = ndi.sobel(gray, axis=1), ndi.sobel(gray, axis=0)
    dx, dy = np.diff(gray, axis=1), np.diff(gray, axis=0)
    return TileSharpness(
        laplacian_variance=float(laplacian[1:-1, 1:-1].var()),
        tenengrad=float((gx[1:-1, 1:-1] ** 2 + gy[1:-1, 1:-1] ** 2).mean()),
        spatial_frequency=float(np.sqrt((dx**2).mean() + (dy**2).mean())),
    )


def blurred_fraction(values: np.ndarray, threshold: float) -> float:
    return float((values < threshold).mean()) if values.size else 0.0


def blur_map(grid_shape: tuple[int, int], positions: list[tuple[int, int]], values: np.ndarray) -> np.ndarray:
    """Sharpness per tile on the tile grid; NaN where a tile was not judged."""
    out = np.full(grid_shape, np.nan, dtype=np.float32)
    for (row, col), value in zip(positions, values):
        out[row, col] = value
    return out


def count_blurred_regions(sharpness_map: np.ndarray, threshold: float) -> int:
    """Connected groups of blurred tiles (8-connectivity): how many places to look at."""
    blurred = np.nan_to_num(sharpness_map, nan=np.inf) < threshold
    return int(ndi.label(blurred, structure=np.ones((3, 3)))[1])
