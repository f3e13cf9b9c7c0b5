"""The consistency of a computed tile with the stored LR: the pure measure, the LR core of a
tile in its window, the stored map's format and the summaries in upscale.done."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from compute.blocks import window_over
from compute.consistency import CAP_DB, consistency_db
from compute.consistency_map import decode_fragment, encode_fragment, merge, metadata_of, parse_value, tile_name
from compute.plan import SlideGeometry, plan_tile
from compute.tile_pixels import block_window, lr_core
from compute.upscaler import InterpolationUpscaler
from core.upscale_client import merge_answers
from schemas.common import ObjectRef
from schemas.events import ConsistencySummary, TileRef, UpscaleDone, UpscaleTileResult
from schemas.layout import hr_consistency_key, hr_consistency_prefix, hr_prefix


def tissue(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour fields with some fine texture: a stand-in for stained tissue."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 230, (height // 8 + 2, width // 8 + 2, 3))
    smooth = np.kron(coarse, np.ones((8, 8, 1)))[:height, :width]
    return np.clip(smooth + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)


def test_an_upscale_that_box_downsamples_back_to_its_input_scores_the_cap() -> None:
    lr = tissue(32, 32)
    hr = np.repeat(np.repeat(lr, 8, axis=0), 8, axis=1)  # each LR pixel spread over its footprint
    assert consistency_db(hr, lr, 8) == CAP_DB


def test_interpolation_stays_close_and_a_wrong_tile_is_far() -> None:
    lr = tissue(64, 64, seed=1)
    sr = InterpolationUpscaler().upscale_batch([lr], 4)[0]
    good = consistency_db(sr, lr, 4)
    other = consistency_db(InterpolationUpscaler().upscale_batch([tissue(64, 64, seed=2)], 4)[0], lr, 4)
    shifted = consistency_db(np.roll(sr, 4 * 3, axis=1), lr, 4)  # misplaced by 3 LR pixels
    assert good > 30
    assert other < 20 and shifted < good - 5


def test_a_partial_edge_tile_is_judged_on_its_real_pixels_only() -> None:
    lr = tissue(32, 12, seed=3)  # the slide ends 12 LR px into the tile at x8
    real = np.repeat(np.repeat(lr, 8, axis=0), 8, axis=1)  # 256 x 96
    assert consistency_db(real, lr, 8) == CAP_DB
    padded = np.zeros((256, 256, 3), np.uint8)  # past the edge: nothing the LR measured
    padded[:, :96] = real
    assert consistency_db(padded, lr, 8) == CAP_DB
    broken = real.copy()
    broken[:, -8:] = 255 - broken[:, -8:]  # the last real LR column disagrees
    assert consistency_db(broken, lr, 8) < 30


def test_bad_inputs_are_refused() -> None:
    lr = tissue(8, 8)
    with pytest.raises(ValueError, match="uint8"):
        consistency_db(np.zeros((16, 16, 3), np.float32), lr, 2)
    with pytest.raises(ValueError, match="share no pixel"):
        consistency_db(np.zeros((1, 16, 3), np.uint8), lr, 2)


@pytest.mark.parametrize(("col", "row"), [(0, 0), (1, 0), (0, 1), (1, 1)])  # the last column and row: partial
def test_lr_core_is_the_slide_region_a_tile_shows(col: int, row: int) -> None:
    slide = tissue(70, 100, seed=4)  # x4: 400 x 280 px, 2 x 2 tiles of 256 (the last partial)

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return slide[y : y + h, x : x + w]

    geometry = SlideGeometry(100, 70)
    top = geometry.top_level(4)
    jobs = [plan_tile(geometry, "E", 1, 4, TileRef(level=top, col=c, row=r), margin=5)
            for c in range(2) for r in range(2)]
    [job] = [j for j in jobs if (j.tile.col, j.tile.row) == (col, row)]
    for window in (window_over([job]), window_over(jobs)):  # alone and in a block
        core = lr_core(block_window(read, window), window, job)
        x0, y0 = job.tile.col * 64, job.tile.row * 64
        np.testing.assert_array_equal(core, slide[y0 : y0 + 64, x0 : x0 + 64])  # clipped at the slide's edge


def test_map_fragments_round_trip_and_merge_to_the_lowest_value() -> None:
    tile = TileRef(level=12, col=3, row=4)
    assert tile_name(tile) == "12/3_4"
    data = encode_fragment({"12/3_4": 41.25, "12/4_4": 18.5}, "sr-cascade-small")
    assert json.loads(data)["model"] == "sr-cascade-small"
    assert decode_fragment(data) == {"12/3_4": 41.25, "12/4_4": 18.5}
    assert merge([{"12/3_4": 41.25}, {"12/3_4": 39.0, "12/5_4": 50.0}]) == {"12/3_4": 39.0, "12/5_4": 50.0}
    for damaged in (b"not json", b"[]", b'{"tiles": 3}', b'{"tiles": {"a": "x", "b": true, "c": -1, "d": 30}}'):
        assert decode_fragment(damaged) == ({"d": 30.0} if b'"d"' in damaged else {})
    assert metadata_of(41.254) == {"consistency-db": "41.25"}
    assert parse_value("41.25") == 41.25 and parse_value(None) is None and parse_value("nan") is None


def test_fragment_keys_live_under_the_slides_hr_prefix() -> None:
    name = uuid.uuid4().hex
    key = hr_consistency_key("EX-1", 2, 8, name)
    assert key.startswith(hr_consistency_prefix("EX-1", 2, 8)) and key.startswith(hr_prefix("EX-1", 2))
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            hr_consistency_key("EX-1", 2, 8, bad)


def _done(values: list[float | None], threshold: float = 30.0, remaining: int = 0) -> UpscaleDone:
    results = [UpscaleTileResult(tile=TileRef(level=12, col=i, row=0),
                                 object=ObjectRef(bucket="slidestream-hr-cache", key=f"k{i}"),
                                 cached=v is None, consistency_db=v) for i, v in enumerate(values)]
    return UpscaleDone(request_id=uuid.UUID(int=1), exam_id="EX-1", slide_number=1, scale=8, results=results,
                       model="bicubic", remaining=remaining,
                       consistency=ConsistencySummary.of([v for v in values if v is not None], threshold))


def test_summaries_count_tiles_below_the_threshold_and_merge_across_batches() -> None:
    assert ConsistencySummary.of([], 30.0) is None
    first = _done([40.0, 20.0, None], remaining=2)
    assert first.consistency == ConsistencySummary(tiles=2, min_db=20.0, mean_db=30.0, below=1, threshold_db=30.0)
    merged = merge_answers([first, _done([None]), _done([50.0, 35.5])])
    assert isinstance(merged, UpscaleDone)
    assert merged.consistency == ConsistencySummary(tiles=4, min_db=20.0, mean_db=36.38, below=1, threshold_db=30.0)
    assert merge_answers([_done([None])]).consistency is None
    again = UpscaleDone.model_validate_json(merged.model_dump_json())
    assert again == merged and again.results[0].consistency_db == 40.0
