"""Data split by source image, degradation and patch sampling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model_zoo.data import (
    EVALUATION_ONLY_DIRS,
    VALIDATION_IMAGES,
    PatchSampler,
    default_data_dir,
    list_sources,
    source_id,
    source_name,
    split_sources,
)
from model_zoo.degradation import DegradationConfig, box_downsample, crop_to_multiple, degrade
from model_zoo.testing import random_image, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


DATA_DIR = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA_DIR / "monuseg2018").is_dir(), reason="shared data not present")


def test_split_is_by_source_image() -> None:
    paths = [Path(f"/d/monuseg2018/{name}.tif") for name in (*VALIDATION_IMAGES[:3], "A", "B")]
    paths.append(Path(f"/d/histolab_tiles/{VALIDATION_IMAGES[0]}.png"))  # same source, other folder
    train, val = split_sources(paths)
    assert {source_id(p) for p in train}.isdisjoint({source_id(p) for p in val})
    assert [source_id(p) for p in val] == list(VALIDATION_IMAGES[:3])
    assert {source_id(p) for p in train} == {"A", "B"}


@needs_data
def test_real_split_holds_out_one_image_per_organ_or_source_and_shares_none() -> None:
    train, val = split_sources(list_sources(DATA_DIR))
    assert len(val) == len(VALIDATION_IMAGES)
    assert {source_id(p) for p in train}.isdisjoint({source_id(p) for p in val})
    # Every collection that trains also has an image held out (where the data has more than one).
    trained_in = {source_name(p) for p in train}
    assert trained_in <= {source_name(p) for p in val}
    assert len(train) >= 100
    # JPEG-q75 sources are evaluation only: the model must not learn to draw blocks.
    assert not any(source_name(p) in EVALUATION_ONLY_DIRS for p in train)


def test_box_downsample_means_blocks() -> None:
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    small = box_downsample(image, 2)
    assert small.shape == (2, 3, 3)
    assert small[0, 0, 0] == pytest.approx(np.mean(image[:2, :2, 0]))
    assert small.mean() == pytest.approx(image.mean())
    with pytest.raises(ValueError, match="multiple"):
        box_downsample(image, 4)


@pytest.mark.parametrize("factor", [2, 3, 8, 16, 32])
def test_box_downsample_of_uint8_equals_the_float_mean_bit_for_bit(factor: int) -> None:
    # The uint8 path sums integers (uint16 up to x16): saturated white must not overflow.
    image = np.random.default_rng(factor).integers(0, 256, (2 * factor, 3 * factor, 3), dtype=np.uint8)
    image[:factor, :factor] = 255
    expected = image.astype(np.float32).reshape(2, factor, 3, factor, 3).mean(axis=(1, 3))
    got = box_downsample(image, factor)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0, 0] == 255.0


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("cfg", [DegradationConfig(), DegradationConfig(blur_prob=1, noise_prob=1, jpeg_prob=1)])
def test_degradation_shape_dtype_range(factor: int, cfg: DegradationConfig) -> None:
    hr = random_image(64, 48)
    lr = degrade(hr, factor, cfg, np.random.default_rng(1))
    assert lr.shape == (64 // factor, 48 // factor, 3) and lr.dtype == np.uint8
    clean = np.rint(box_downsample(hr, factor))
    tolerance = 0.5 if cfg == DegradationConfig() else 60
    assert np.abs(lr.astype(float) - clean).mean() <= tolerance


def test_crop_to_multiple_is_centred() -> None:
    image = random_image(21, 10)
    cropped = crop_to_multiple(image, 8)
    assert cropped.shape == (16, 8, 3)
    assert np.array_equal(cropped, image[2:18, 1:9])


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_sampler_targets_are_consistent_with_lr(scale: int) -> None:
    sampler = PatchSampler([random_image(100, 90, seed=1), random_image(70, 120, seed=2)], seed=3)
    batch = sampler.batch(3, scale, 8)
    assert batch.lr.shape == (3, 3, 8, 8)
    assert sorted(batch.targets) == [s for s in (2, 4, 8) if s <= scale]
    for out_scale, target in batch.targets.items():
        assert target.shape == (3, 3, 8 * out_scale, 8 * out_scale)
        assert 0.0 <= float(target.min()) and float(target.max()) <= 1.0
        pooled = target.reshape(3, 3, 8, out_scale, 8, out_scale).mean(dim=(3, 5))
        assert float((pooled - batch.lr).abs().max()) <= 0.5 / 255 + 1e-6


def test_sampler_is_reproducible_from_its_state() -> None:
    sampler = PatchSampler([random_image(64, 64, seed=1)], seed=0)
    state = sampler.state()
    first = sampler.batch(2, 4, 8).lr
    sampler.restore(state)
    assert np.array_equal(sampler.batch(2, 4, 8).lr.numpy(), first.numpy())
