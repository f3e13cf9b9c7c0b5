"""bench.consistency_bench cuts the right tiles and scores them against the LR they came from."""

from __future__ import annotations

import numpy as np

from bench.consistency_bench import tile_values


def _repeat(lr: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)


def test_an_upscale_that_downsamples_back_to_the_lr_scores_identical_on_every_tile() -> None:
    hr = np.random.default_rng(1).integers(0, 256, (600, 530, 3), dtype=np.uint8)
    values = tile_values(hr, 8, lambda lr: lr, _repeat)
    assert len(values) == 2 * 2  # 512 x 512 after cropping to whole tiles
    assert all(v == 99.0 for v in values)


def test_a_misplaced_upscale_scores_far_below_the_threshold() -> None:
    hr = np.random.default_rng(2).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    values = tile_values(hr, 4, lambda lr: lr, lambda lr, s: _repeat(np.roll(lr, 3, axis=1), s))
    assert len(values) == 4 and max(values) < 20
