"""Blocks of neighbouring tiles: which tiles share a window, window bounds at the slide edges,
and tiles cut from a block equal to the same tiles computed alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.blocks import BlockLimits, Cells, Window, plan_windows, rectangles, window_over
from compute.plan import Rect, SlideGeometry, TileJob, plan_tile
from compute.samples import downsample, load_rgb, shared_images
from compute.tile_pixels import ReadRegion, block_tile, block_window, hr_tile, lone_windows, lr_window
from compute.upscaler import InterpolationUpscaler
from core.settings import get_settings
from schemas.events import TileRef
from schemas.layout import TILE_SIZE


def no_memory_cap(max_tiles: int = 64) -> BlockLimits:
    return BlockLimits(max_tiles=max_tiles, max_bytes=1 << 60, window_bytes=lambda h, w, s: h * w)


def level_jobs(geo: SlideGeometry, scale: int, level: int, cells: list[tuple[int, int]], margin: int,
               exam: str = "E1") -> list[TileJob]:
    return [plan_tile(geo, exam, 1, scale, TileRef(level=level, col=c, row=r), margin) for c, r in cells]


def all_cells(geo: SlideGeometry, scale: int, level: int) -> list[tuple[int, int]]:
    cols, rows = geo.grid(scale, level)
    return [(c, r) for r in range(rows) for c in range(cols)]


def covered(windows: list[Window]) -> list[tuple[int, int]]:
    return sorted((j.tile.col, j.tile.row) for w in windows for j in w.jobs)


# --- geometry -----------------------------------------------------------------------------


@given(w=st.integers(1, 600), h=st.integers(1, 600), scale=st.sampled_from([2, 4, 8]), margin=st.integers(0, 20))
@settings(max_examples=60, deadline=None)
def test_a_lone_tiles_window_is_exactly_its_own_window(w: int, h: int, scale: int, margin: int) -> None:
    geo = SlideGeometry(w, h)
    for level in geo.sr_levels(scale):
        for job in level_jobs(geo, scale, level, all_cells(geo, scale, level), margin):
            window = window_over([job])
            assert (window.lr_read, window.pad) == (job.lr_read, job.pad)
            assert window.width == window.height == job.input_side
            assert window.crop(job) == job.crop


def test_an_inner_block_reads_its_cores_plus_one_margin() -> None:
    geo = SlideGeometry(500, 500)  # x8: 16 x 16 tiles of 32 LR px
    cells = [(c, r) for r in range(1, 4) for c in range(2, 6)]
    window = window_over(level_jobs(geo, 8, geo.top_level(8), cells, margin=20))
    assert window.cells == Cells(2, 1, 4, 3)
    assert window.lr_read == Rect(2 * 32 - 20, 1 * 32 - 20, 4 * 32 + 40, 3 * 32 + 40)
    assert window.pad == (0, 0, 0, 0)
    assert (window.width, window.height) == (4 * 32 + 40, 3 * 32 + 40)
    job = next(j for j in window.jobs if (j.tile.col, j.tile.row) == (4, 2))
    assert window.crop(job) == Rect((20 + 2 * 32) * 8, (20 + 32) * 8, TILE_SIZE, TILE_SIZE)


def test_blocks_at_the_slide_edges_are_clipped_then_edge_padded() -> None:
    geo = SlideGeometry(250, 180)  # x4: 1000 x 720 px, 4 x 3 tiles of 64 LR px; the last column and row are partial
    level = geo.top_level(4)
    corner = window_over(level_jobs(geo, 4, level, [(0, 0), (1, 0), (0, 1), (1, 1)], margin=5))
    assert corner.lr_read == Rect(0, 0, 128 + 5, 128 + 5)
    assert corner.pad == (5, 5, 0, 0)
    far = window_over(level_jobs(geo, 4, level, [(2, 1), (3, 1), (2, 2), (3, 2)], margin=5))
    assert far.lr_read == Rect(128 - 5, 64 - 5, 250 - 123, 180 - 59)  # stops at the slide
    assert (far.width, far.height) == (2 * 64 + 10, 2 * 64 + 10)
    assert far.pad == (0, 0, 138 - 127, 138 - 121)  # the missing part of the last tiles + the margin
    edge = next(j for j in far.jobs if (j.tile.col, j.tile.row) == (3, 2))
    assert far.crop(edge) == Rect((5 + 64) * 4, (5 + 64) * 4, 1000 - 768, 720 - 512)


def test_a_window_holds_one_image_level() -> None:
    geo = SlideGeometry(500, 500)
    top, below = geo.top_level(8), geo.top_level(8) - 1
    with pytest.raises(ValueError, match="one image level"):
        window_over(level_jobs(geo, 8, top, [(0, 0)], 20) + level_jobs(geo, 8, below, [(1, 0)], 20))


# --- planning -----------------------------------------------------------------------------


def test_a_viewport_and_its_ring_become_a_few_windows() -> None:
    geo = SlideGeometry(750, 750)  # x8: 24 x 24 tiles
    cells = [(c, r) for r in range(7) for c in range(10)]  # 8 x 5 viewport + a ring of one tile
    windows = plan_windows(level_jobs(geo, 8, geo.top_level(8), cells, margin=20), no_memory_cap(max_tiles=40))
    assert covered(windows) == sorted(cells)  # each tile in exactly one window
    assert len(windows) == 2 and all(len(w.jobs) <= 40 for w in windows)
    assert {(w.cells.cols, w.cells.rows) for w in windows} == {(5, 7)}  # equal halves: one model call


def test_rectangles_cover_only_the_tiles_asked_for() -> None:
    l_shape = {(0, 0), (1, 0), (2, 0), (0, 1), (0, 2)}
    rects = rectangles(l_shape)
    assert sorted(p for r in rects for p in r.positions()) == sorted(l_shape)
    assert len(rects) == 2 and rects[0].cols * rects[0].rows == 3  # the arm of three, then the rest


def test_tiles_that_are_not_adjacent_get_windows_of_their_own() -> None:
    geo = SlideGeometry(500, 500)
    cells = [(0, 0), (1, 1), (3, 0), (7, 5)]  # diagonal neighbours do not form a rectangle
    windows = plan_windows(level_jobs(geo, 8, geo.top_level(8), cells, margin=20), no_memory_cap())
    assert len(windows) == 4 and all(len(w.jobs) == 1 and w.width == 32 + 40 for w in windows)


def test_the_memory_cap_bounds_every_window() -> None:
    geo = SlideGeometry(500, 500)
    cells = [(c, r) for r in range(6) for c in range(6)]
    cap = (2 * 32 + 40) * (3 * 32 + 40)  # pixels of a 2 x 3 block's window
    limits = BlockLimits(max_tiles=64, max_bytes=cap, window_bytes=lambda h, w, s: h * w)
    windows = plan_windows(level_jobs(geo, 8, geo.top_level(8), cells, margin=20), limits)
    assert covered(windows) == sorted(cells)
    assert all(w.width * w.height <= cap for w in windows)
    assert len(windows) == 6  # 2 x 3 or 3 x 2 blocks, no smaller pieces


def test_slides_and_levels_never_share_a_window() -> None:
    geo = SlideGeometry(500, 500)
    top = geo.top_level(8)
    jobs = (level_jobs(geo, 8, top, [(0, 0), (1, 0)], 20) + level_jobs(geo, 8, top - 1, [(0, 0), (1, 0)], 19)
            + level_jobs(geo, 8, top, [(0, 1), (1, 1)], 20, exam="E2"))
    windows = plan_windows(jobs, no_memory_cap())
    assert len(windows) == 3
    assert all(len({j.block_group for j in w.jobs}) == 1 for w in windows)


@given(cells=st.sets(st.tuples(st.integers(0, 11), st.integers(0, 9)), min_size=1, max_size=60),
       max_tiles=st.integers(1, 20), scale=st.sampled_from([2, 4, 8]))
@settings(max_examples=80, deadline=None)
def test_any_set_of_tiles_is_covered_once_by_windows_that_fit(cells: set[tuple[int, int]], max_tiles: int,
                                                              scale: int) -> None:
    geo = SlideGeometry(12 * TILE_SIZE // scale, 10 * TILE_SIZE // scale)
    windows = plan_windows(level_jobs(geo, scale, geo.top_level(scale), sorted(cells), margin=3),
                           no_memory_cap(max_tiles))
    assert covered(windows) == sorted(cells)
    for w in windows:
        assert len(w.jobs) <= max_tiles
        assert len(w.jobs) == w.cells.cols * w.cells.rows  # no tile computed that was not asked for


# --- pixels -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lr_pixels() -> np.ndarray:
    images = shared_images(get_settings().shared_data)
    if not images:
        pytest.skip("shared H&E data not available")
    return downsample(load_rgb(images[0]), 4)[:150, :230]  # 230 x 150 LR: partial edge tiles at every scale


def read_from(pixels: np.ndarray) -> ReadRegion:
    return lambda x, y, w, h: pixels[y : y + h, x : x + w]


Upscale = Callable[[Sequence[np.ndarray], int], list[np.ndarray]]


def block_tiles(pixels: np.ndarray, windows: list[Window], upscale: Upscale) -> dict[tuple[int, int], np.ndarray]:
    out = {}
    for window in windows:
        upscaled = upscale([block_window(read_from(pixels), window)], window.effective_scale)[0]
        for job in window.jobs:
            out[(job.tile.col, job.tile.row)] = block_tile(upscaled, window, job)
    return out


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_bicubic_tiles_cut_from_blocks_equal_the_whole_image_and_lone_tiles(lr_pixels: np.ndarray,
                                                                            scale: int) -> None:
    up = InterpolationUpscaler()
    geo = SlideGeometry(lr_pixels.shape[1], lr_pixels.shape[0])
    for level in geo.sr_levels(scale):
        e = geo.effective_scale(scale, level)
        jobs = level_jobs(geo, scale, level, all_cells(geo, scale, level), up.margin_for(e))
        windows = plan_windows(jobs, no_memory_cap(max_tiles=4))  # several blocks, edges included
        assert len(windows) < len(jobs)
        tiles = block_tiles(lr_pixels, windows, up.upscale_batch)
        whole = up.upscale_batch([lr_pixels], e)[0]
        for job in jobs:
            x0, y0 = job.tile.col * TILE_SIZE, job.tile.row * TILE_SIZE
            tile = tiles[(job.tile.col, job.tile.row)]
            np.testing.assert_array_equal(tile, whole[y0 : y0 + job.crop.height, x0 : x0 + job.crop.width])
            alone = hr_tile(up.upscale_batch([lr_window(read_from(lr_pixels), job)], e)[0], job)
            np.testing.assert_array_equal(tile, alone)


def test_lone_windows_cut_from_a_block_are_the_tiles_own_windows(lr_pixels: np.ndarray) -> None:
    geo = SlideGeometry(lr_pixels.shape[1], lr_pixels.shape[0])
    level = geo.top_level(4)
    jobs = level_jobs(geo, 4, level, all_cells(geo, 4, level), margin=7)
    window = window_over(jobs)  # the whole level: every edge case in one block
    for lone, pixels in lone_windows(block_window(read_from(lr_pixels), window), window):
        np.testing.assert_array_equal(pixels, lr_window(read_from(lr_pixels), lone.jobs[0]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("scale", [4, 8])
def test_model_tiles_from_a_block_match_lone_tiles(lr_pixels: np.ndarray, scale: int) -> None:
    """The default model: a tile computed inside a block is the tile computed alone (on CPU
    bit for bit; the bound leaves room for float rounding on other kernels)."""
    from compute.upscaler import ModelUpscaler

    try:
        from model_zoo import load_model

        up = ModelUpscaler(load_model(), "default")
    except Exception as exc:  # noqa: BLE001 - no weights in this checkout
        pytest.skip(f"model unavailable: {exc}")
    pixels = lr_pixels[: 3 * 256 // scale + 10, : 3 * 256 // scale + 10]  # 3 x 3 tiles + partial edges
    geo = SlideGeometry(pixels.shape[1], pixels.shape[0])
    level = geo.top_level(scale)
    jobs = level_jobs(geo, scale, level, all_cells(geo, scale, level), up.margin_for(scale))
    [window] = plan_windows(jobs, no_memory_cap())
    tiles = block_tiles(pixels, [window], up.upscale_batch)
    for job in jobs:
        alone = hr_tile(up.upscale_batch([lr_window(read_from(pixels), job)], scale)[0], job)
        block = tiles[(job.tile.col, job.tile.row)]
        assert psnr(block, alone) > 50, (job.tile, psnr(block, alone))
        assert int(np.abs(block.astype(int) - alone.astype(int)).max()) <= 2


def test_a_capped_margin_keeps_model_tiles_within_rounding_of_exact(lr_pixels: np.ndarray) -> None:
    """``EngineConfig.max_margin``: sr-cascade-small's declared margin (its receptive field)
    is loose; 12 LR px of context change a few values by one level."""
    from compute.upscaler import ModelUpscaler

    try:
        from model_zoo import load_model

        up = ModelUpscaler(load_model(), "default")
    except Exception as exc:  # noqa: BLE001 - no weights in this checkout
        pytest.skip(f"model unavailable: {exc}")
    geo = SlideGeometry(lr_pixels.shape[1], lr_pixels.shape[0])
    level = geo.top_level(8)
    cells = [(c, r) for r in range(1, 3) for c in range(1, 4)]  # inner tiles: full context either way
    exact = level_jobs(geo, 8, level, cells, up.margin_for(8))
    capped = level_jobs(geo, 8, level, cells, 12)
    tiles = block_tiles(lr_pixels, plan_windows(exact, no_memory_cap()), up.upscale_batch)
    for window in plan_windows(capped, no_memory_cap(max_tiles=2)):  # cut where the margin matters
        for cell, tile in block_tiles(lr_pixels, [window], up.upscale_batch).items():
            assert psnr(tile, tiles[cell]) > 60
            assert int(np.abs(tile.astype(int) - tiles[cell].astype(int)).max()) <= 1


def test_windows_read_the_models_own_cap_unless_settings_override() -> None:
    """``EngineConfig.max_margin`` None: each model's measured ``margin_cap`` (registry); a
    number overrides it; an upscaler without a cap keeps its full margin."""
    from compute.upscaler import InterpolationUpscaler, ModelUpscaler, window_margin

    class Resolver:  # the parts of a SuperResolver the adapter reads
        context_margin = 20
        margin_cap = 8

        def margin_for(self, scale: int) -> int:
            return 20

    capped = ModelUpscaler(Resolver(), "m")
    assert window_margin(capped, 8) == 8
    assert window_margin(capped, 8, 12) == 12
    assert window_margin(capped, 8, 30) == 20  # never more than the model's declared reach
    assert window_margin(InterpolationUpscaler(), 8) == InterpolationUpscaler.context_margin
