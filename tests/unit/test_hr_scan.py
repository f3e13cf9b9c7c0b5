"""Cutting a kept HR scan into the slide's HR pyramid tiles (geometry shared with compute and
the viewer), and refusing a scan that is not that slide's upload."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.provenance import ForgedEvent, check_scan_upload
from schemas.common import ObjectRef
from schemas.layout import hr_scale_for, sr_levels, tile_grid
from slide_io.array_source import ArraySlideSource
from storage.hr_scan import cut_tile, scanned_tiles


def test_tiles_cover_every_sr_level_of_the_pyramid() -> None:
    tiles = list(scanned_tiles(125, 100, 8, 1000, 800))
    levels = sr_levels(125, 100, 8)
    assert {t.level for t in tiles} == set(levels)
    for level in levels:
        cols, rows = tile_grid(1000, 800, level)
        assert sum(1 for t in tiles if t.level == level) == cols * rows
    top = [t for t in tiles if t.level == levels.stop - 1]
    assert all(t.span_x == t.width and t.span_y == t.height for t in top)  # scan level 0 = 40x
    coarse = [t for t in tiles if t.level == levels.start]
    assert all(t.span_x == pytest.approx(4 * t.width) for t in coarse)  # 10x from a 40x scan


def test_a_top_level_tile_is_the_scan_pixels() -> None:
    scan = np.random.default_rng(3).integers(0, 255, (800, 1000, 3), dtype=np.uint8)
    source = ArraySlideSource(scan)
    tile = next(t for t in scanned_tiles(125, 100, 8, 1000, 800) if t.level == 10 and (t.col, t.row) == (1, 2))
    assert np.array_equal(cut_tile(source, tile), scan[512:768, 256:512])
    edge = next(t for t in scanned_tiles(125, 100, 8, 1000, 800) if t.level == 10 and (t.col, t.row) == (3, 3))
    assert cut_tile(source, edge).shape == (800 - 768, 1000 - 768, 3)


def test_scan_rounding_is_absorbed() -> None:
    """QC's LR is the scan / downsample rounded: a scan 3 px wider still fills the tiles."""
    source = ArraySlideSource(np.full((803, 1003, 3), 120, np.uint8))
    for tile in scanned_tiles(125, 100, 8, 1003, 803):
        assert cut_tile(source, tile).shape == (tile.height, tile.width, 3)


def test_only_the_slides_own_upload_is_accepted() -> None:
    check_scan_upload(ObjectRef(bucket="slidestream-ingest", key="scans/E1/0001/scan.svs"), "slidestream-ingest", "E1", 1)
    for bad in (ObjectRef(bucket="slidestream-recent", key="scans/E1/0001/scan.svs"),
                ObjectRef(bucket="slidestream-ingest", key="scans/E2/0001/scan.svs"),
                ObjectRef(bucket="slidestream-ingest", key="lr-staging/E1/0001.tiff")):
        with pytest.raises(ForgedEvent):
            check_scan_upload(bad, "slidestream-ingest", "E1", 1)


def test_hr_scale_for_the_target_magnification() -> None:
    assert hr_scale_for(5.0, 40.0) == 8 and hr_scale_for(10.0, 40.0) == 4 and hr_scale_for(None, 40.0) == 8
