"""Weights registry: checksums, corrupted files, the shipped default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model_zoo import DEFAULT_MODEL, available_models, load_model
from model_zoo.baselines import interpolate
from model_zoo.data import default_data_dir
from model_zoo.degradation import box_downsample, to_uint8
from model_zoo.images import load_rgb
from model_zoo.metrics import psnr
from model_zoo.registry import (
    REGISTRY,
    WEIGHTS_DIR,
    ModelSpec,
    WeightsChecksumError,
    WeightsError,
    load_generator,
    save_weights,
    sha256_of,
)
from model_zoo.testing import random_generator, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_weights_round_trip_with_checksum(tmp_path: Path) -> None:
    model = random_generator()
    digest = save_weights(model, tmp_path / "w.pt")
    spec = ModelSpec("t", "tiny", "w.pt", digest)
    loaded = load_generator(spec, weights_dir=tmp_path)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(loaded.state_dict()[key].numpy(), value.half().float().numpy())


def test_checksum_mismatch_names_the_file(tmp_path: Path) -> None:
    digest = save_weights(random_generator(), tmp_path / "w.pt")
    with open(tmp_path / "w.pt", "r+b") as handle:  # flip one byte in the middle
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsChecksumError, match=str(tmp_path / "w.pt")):
        load_generator(ModelSpec("t", "tiny", "w.pt", digest), weights_dir=tmp_path)


def test_missing_file_and_wrong_architecture_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="nothere.pt"):
        load_generator(ModelSpec("t", "tiny", "nothere.pt", "0" * 64), weights_dir=tmp_path)
    digest = save_weights(random_generator(), tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="w.pt"):
        load_generator(ModelSpec("t", "small", "w.pt", digest), weights_dir=tmp_path)


def test_package_default_is_the_registry_default() -> None:
    from model_zoo import registry

    assert DEFAULT_MODEL == registry.DEFAULT_MODEL and DEFAULT_MODEL in REGISTRY


def test_unknown_model_lists_registered_ones() -> None:
    with pytest.raises(KeyError, match=DEFAULT_MODEL):
        load_model("no-such-model")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_weights_match_their_checksum(name: str) -> None:
    spec = REGISTRY[name]
    assert spec.weights and spec.sha256
    assert sha256_of(WEIGHTS_DIR / spec.weights) == spec.sha256
    assert (WEIGHTS_DIR / spec.weights).stat().st_size < 25 << 20  # small enough to ship in the repository


@pytest.mark.skipif(not (default_data_dir() / "monuseg2018").is_dir(), reason="shared data not present")
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_models_beat_bicubic_on_a_held_out_crop(name: str) -> None:
    assert DEFAULT_MODEL in available_models()
    resolver = load_model(name)
    image = load_rgb(default_data_dir() / "monuseg2018" / "TCGA-B0-5710-01Z-00-DX1.tif")
    hr = image[300:556, 300:556]
    lr = to_uint8(box_downsample(hr, 4))
    assert psnr(resolver.upscale(lr, 4), hr, 4) > psnr(interpolate(lr, 4, "bicubic"), hr, 4)


def test_load_model_answers_x2_the_way_the_registry_says(monkeypatch) -> None:
    from dataclasses import replace

    spec = REGISTRY[DEFAULT_MODEL]
    monkeypatch.setitem(REGISTRY, "via-x4", replace(spec, name="via-x4", x2_path="x4"))
    monkeypatch.setitem(REGISTRY, "own-x2", replace(spec, name="own-x2", x2_path="model"))
    via, own = load_model("via-x4"), load_model("own-x2")
    assert via.x2_path == "x4" and own.x2_path == "model"
    assert load_model("via-x4", x2_path="model").x2_path == "model"  # the caller can still choose
    lr = np.random.default_rng(3).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    assert not np.array_equal(via.upscale(lr, 2), own.upscale(lr, 2))
    np.testing.assert_array_equal(via.upscale(lr, 4), own.upscale(lr, 4))


def test_registered_models_answer_x2_with_lanczos_unless_told_otherwise() -> None:
    """MODEL_CARD.md "x2": the default's x2 stage is better than Lanczos on JPEG XL d1 LR but
    the dearest scale per pixel, so the registry keeps Lanczos; ``compute.x2_path`` (passed to
    ``load_model``) switches a worker to the x2 stage."""
    from model_zoo.baselines import interpolate

    lr = np.random.default_rng(5).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    for name in sorted(REGISTRY):
        resolver = load_model(name)
        assert resolver.x2_path == "lanczos"
        np.testing.assert_array_equal(resolver.upscale(lr, 2), interpolate(lr, 2, "lanczos"))
    stage = load_model(DEFAULT_MODEL, x2_path="model")
    assert not np.array_equal(stage.upscale(lr, 2), interpolate(lr, 2, "lanczos"))


def test_the_compute_adapter_reports_what_answers_each_scale() -> None:
    from compute.upscaler import ModelUpscaler, load_upscaler, method_name

    upscaler = ModelUpscaler(load_model(DEFAULT_MODEL), DEFAULT_MODEL)
    assert method_name(upscaler, 2) == "lanczos"
    assert method_name(upscaler, 4) == method_name(upscaler, 8) == DEFAULT_MODEL
    staged = load_upscaler("default", x2_path="model")  # compute.x2_path=model, e.g. on a GPU worker
    assert method_name(staged, 2) == method_name(staged, 8) == DEFAULT_MODEL
