"""Tile planning: pyramid geometry, LR windows with context, seamless tiled upscaling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.plan import InvalidRequest, SlideGeometry, plan_request, plan_tile, region_tiles
from compute.samples import downsample, load_rgb, shared_images
from compute.tile_pixels import hr_tile, lr_window
from compute.upscaler import InterpolationUpscaler
from core.settings import get_settings
from schemas.events import Region, TileRef, UpscaleRequested
from schemas.layout import TILE_SIZE, level_size, tile_grid

sizes = st.integers(min_value=1, max_value=3000)
scales = st.sampled_from([2, 4, 8])


@given(w=sizes, h=sizes, scale=scales)
@settings(max_examples=200, deadline=None)
def test_sr_levels_are_the_lr_image_at_integer_scales(w: int, h: int, scale: int) -> None:
    geo = SlideGeometry(w, h)
    levels = geo.sr_levels(scale)
    assert len(levels) == {2: 1, 4: 2, 8: 3}[scale]
    for level in levels:
        e = geo.effective_scale(scale, level)
        # The shared Deep Zoom geometry (viewer side) agrees with ours (compute side).
        assert geo.level_size(scale, level) == level_size(w * scale, h * scale, level) == (w * e, h * e)
        assert geo.grid(scale, level) == tile_grid(w * scale, h * scale, level)
    assert geo.effective_scale(scale, levels.stop - 1) == scale


@given(w=st.integers(1, 700), h=st.integers(1, 700), scale=scales, margin=st.integers(0, 6))
@settings(max_examples=60, deadline=None)
def test_tiles_partition_the_level_and_windows_stay_inside_the_slide(w: int, h: int, scale: int, margin: int) -> None:
    geo = SlideGeometry(w, h)
    for level in geo.sr_levels(scale):
        lw, lh = geo.level_size(scale, level)
        covered = np.zeros((lh, lw), dtype=np.uint8)
        cols, rows = geo.grid(scale, level)
        for row in range(rows):
            for col in range(cols):
                job = plan_tile(geo, "E1", 1, scale, TileRef(level=level, col=col, row=row), margin)
                r, e = job.lr_read, job.effective_scale
                assert 0 <= r.x and 0 <= r.y and r.x + r.width <= w and r.y + r.height <= h
                left, top, right, bottom = job.pad
                assert min(job.pad) >= 0
                assert left + r.width + right == job.input_side == TILE_SIZE // e + 2 * margin
                assert top + r.height + bottom == job.input_side
                c = job.crop
                assert c.x + c.width <= job.input_side * e and c.y + c.height <= job.input_side * e
                x0, y0 = col * TILE_SIZE, row * TILE_SIZE
                covered[y0 : y0 + c.height, x0 : x0 + c.width] += 1
        assert (covered == 1).all()  # every output pixel in exactly one tile


def test_out_of_range_levels_and_tiles_are_refused_with_a_reason() -> None:
    geo = SlideGeometry(1000, 600)  # x8: 8000 x 4800, top level 13, SR levels 11..13
    assert list(geo.sr_levels(8)) == [11, 12, 13]
    with pytest.raises(InvalidRequest, match="not a super-resolution level"):
        plan_tile(geo, "E1", 1, 8, TileRef(level=10, col=0, row=0), 2)
    with pytest.raises(InvalidRequest, match="not a super-resolution level"):
        plan_tile(geo, "E1", 1, 8, TileRef(level=14, col=0, row=0), 2)
    cols, rows = geo.grid(8, 13)
    assert (cols, rows) == (32, 19)
    plan_tile(geo, "E1", 1, 8, TileRef(level=13, col=cols - 1, row=rows - 1), 2)
    with pytest.raises(InvalidRequest, match="outside level 13"):
        plan_tile(geo, "E1", 1, 8, TileRef(level=13, col=cols, row=0), 2)
    with pytest.raises(InvalidRequest, match="outside level 13"):
        plan_tile(geo, "E1", 1, 8, TileRef(level=13, col=0, row=rows), 2)


def test_region_maps_to_covering_top_level_tiles_clipped_to_the_slide() -> None:
    geo = SlideGeometry(100, 50)  # x4: 400 x 200 px, 2 x 1 tiles at the top level
    top = geo.top_level(4)
    tiles = region_tiles(geo, 4, Region(x=250, y=10, width=1000, height=1000))
    assert [(t.level, t.col, t.row) for t in tiles] == [(top, 0, 0), (top, 1, 0)]
    tiles = region_tiles(geo, 4, Region(x=300, y=0, width=10, height=10))
    assert [(t.col, t.row) for t in tiles] == [(1, 0)]
    with pytest.raises(InvalidRequest, match="outside"):
        region_tiles(geo, 4, Region(x=400, y=0, width=10, height=10))


def _request(**fields: object) -> UpscaleRequested:
    base: dict[str, object] = {"exam_id": "E1", "slide_number": 1, "scale": 4, "priority": "interactive"}
    return UpscaleRequested(**(base | fields))


def test_plan_request_drops_duplicates_and_enforces_the_tile_limit() -> None:
    geo = SlideGeometry(300, 300)  # x4: 1200 px, top level 11, 5 x 5 tiles
    tile = TileRef(level=11, col=1, row=2)
    jobs = plan_request(_request(tiles=[tile, tile, TileRef(level=11, col=0, row=0)]), geo, 2, 10)
    assert [(j.tile.col, j.tile.row) for j in jobs] == [(1, 2), (0, 0)]
    assert jobs[0].key == "hr/E1/0001/x4/11/1_2.png"
    with pytest.raises(InvalidRequest, match="limit of 24"):
        plan_request(_request(region=Region(x=0, y=0, width=1200, height=1200)), geo, 2, 24)
    # one bad tile refuses the whole request
    with pytest.raises(InvalidRequest):
        plan_request(_request(tiles=[tile, TileRef(level=11, col=5, row=0)]), geo, 2, 10)


@pytest.fixture(scope="module")
def lr_pixels() -> np.ndarray:
    images = shared_images(get_settings().shared_data)
    if not images:
        pytest.skip("shared H&E data not available")
    # Odd size, so edge tiles are partial and windows are clipped on every side.
    return downsample(load_rgb(images[0]), 4)[:203, :177]


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_tiled_upscaling_reproduces_the_whole_image_exactly(lr_pixels: np.ndarray, scale: int) -> None:
    """Context margin + edge padding make separately computed tiles seamless: stitched,
    they equal the upscale of the whole LR image, at every SR level."""
    h, w = lr_pixels.shape[:2]
    geo = SlideGeometry(w, h)
    up = InterpolationUpscaler()

    def read(x: int, y: int, width: int, height: int) -> np.ndarray:
        return lr_pixels[y : y + height, x : x + width]

    for level in geo.sr_levels(scale):
        e = geo.effective_scale(scale, level)
        whole = up.upscale_batch([lr_pixels], e)[0]
        stitched = np.zeros_like(whole)
        cols, rows = geo.grid(scale, level)
        jobs = [plan_tile(geo, "E1", 1, scale, TileRef(level=level, col=c, row=r), up.context_margin)
                for r in range(rows) for c in range(cols)]
        outputs = up.upscale_batch([lr_window(read, j) for j in jobs], e)
        for job, out in zip(jobs, outputs):
            tile = hr_tile(out, job)
            y0, x0 = job.tile.row * TILE_SIZE, job.tile.col * TILE_SIZE
            stitched[y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]] = tile
        np.testing.assert_array_equal(stitched, whole)


def test_without_context_margin_tiles_show_seams(lr_pixels: np.ndarray) -> None:
    """Control for the test above: with no context the borders of inner tiles differ."""
    h, w = lr_pixels.shape[:2]
    geo = SlideGeometry(w, h)
    up = InterpolationUpscaler()
    level = geo.top_level(4)
    whole = up.upscale_batch([lr_pixels], 4)[0]
    job = plan_tile(geo, "E1", 1, 4, TileRef(level=level, col=1, row=1), margin=0)
    tile = hr_tile(up.upscale_batch([lr_window(lambda x, y, ww, hh: lr_pixels[y:y + hh, x:x + ww], job)], 4)[0], job)
    assert not np.array_equal(tile, whole[256:512, 256:512])
