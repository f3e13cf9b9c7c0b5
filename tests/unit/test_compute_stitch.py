"""Stitching HR tiles into a pyramidal TIFF that the slide reader opens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compute.samples import load_rgb, shared_images
from compute.stitch import write_hr_pyramid
from core.settings import get_settings
from schemas.layout import TILE_SIZE
from slide_io import Compression, TiledTiff
from slide_io.resample import halve


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    images = shared_images(get_settings().shared_data)
    if not images:
        pytest.skip("shared H&E data not available")
    return load_rgb(images[0])[:530, :700]  # partial edge tiles on both axes


def rows_of(image: np.ndarray):
    def fetch_row(row: int) -> list[np.ndarray]:
        band = image[row * TILE_SIZE : (row + 1) * TILE_SIZE]
        return [band[:, c : c + TILE_SIZE] for c in range(0, image.shape[1], TILE_SIZE)]

    return fetch_row


def test_lossless_pyramid_round_trips_through_the_slide_reader(tmp_path: Path, image: np.ndarray) -> None:
    dest = tmp_path / "slide.tiff"
    progress: list[tuple[int, int]] = []
    sizes = write_hr_pyramid(dest, 700, 530, rows_of(image), mpp=0.25, magnification=40.0,
                             compression=Compression.ZSTD, metadata={"scale": 8},
                             on_row=lambda done, total: progress.append((done, total)))
    assert sizes == [(700, 530), (350, 265), (175, 133)]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    with TiledTiff(dest) as tiff:
        assert [(lv.width, lv.height) for lv in tiff.levels] == sizes
        assert tiff.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(tiff.read_region(0, 0, 0, 700, 530), image)
        level1 = halve(image)
        np.testing.assert_array_equal(tiff.read_region(1, 0, 0, 350, 265), level1)
        np.testing.assert_array_equal(tiff.read_region(2, 0, 0, 175, 133), halve(level1))
    assert not [p for p in tmp_path.iterdir() if p.name != "slide.tiff"]  # temporary levels removed


def test_a_missing_tile_is_an_error_not_a_hole(tmp_path: Path, image: np.ndarray) -> None:
    def short_rows(row: int) -> list[np.ndarray]:
        return rows_of(image)(row)[:-1]

    with pytest.raises(ValueError, match="expected 3"):
        write_hr_pyramid(tmp_path / "slide.tiff", 700, 530, short_rows, mpp=None, magnification=None)
