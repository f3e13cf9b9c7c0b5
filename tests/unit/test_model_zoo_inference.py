"""SuperResolver: tiling equals a single pass, determinism, batching, bad input."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from model_zoo.baselines import interpolate
from model_zoo.inference import SuperResolver
from model_zoo.testing import random_generator, random_image, single_thread
from model_zoo.tiling import plan_axis, plan_tiles


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


def single_pass(model, image: np.ndarray, scale: int) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        y = model(x, scale)[scale].clamp(0, 1)
    return y[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("length,tile,margin", [(1, 8, 3), (7, 8, 3), (50, 8, 3), (50, 16, 20), (33, 5, 0)])
def test_tile_cores_partition_the_axis(length: int, tile: int, margin: int) -> None:
    spans = plan_axis(length, tile, margin)
    covered = [i for s in spans for i in range(s.core_start, s.core_end)]
    assert covered == list(range(length))
    assert len({s.window_size for s in spans}) == 1
    for s in spans:
        assert 0 <= s.window_start and s.window_start + s.window_size <= length
        assert s.core_start - s.window_start >= margin or s.window_start == 0
        assert s.window_start + s.window_size - s.core_end >= margin or s.window_start + s.window_size == length


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("shape", [(45, 38), (9, 70)])
def test_tiled_equals_single_pass(scale: int, shape: tuple[int, int]) -> None:
    model = random_generator()
    image = random_image(*shape)
    resolver = SuperResolver(model, tile=12, max_batch_bytes=1)  # many tiles, batch of one
    assert len(plan_tiles(*shape, 12, resolver.margin_for(scale))) > 1
    np.testing.assert_allclose(resolver.upscale_float(image, scale), single_pass(model, image, scale), atol=1e-5)


def test_too_small_margin_would_show_seams() -> None:
    """Guards the test above: with no context the tiles differ from the single pass."""
    model = random_generator()
    image = random_image(40, 40)
    resolver = SuperResolver(model, tile=12)
    resolver.margin_for = lambda scale: 0  # type: ignore[method-assign]  # test double
    assert np.abs(resolver.upscale_float(image, 4) - single_pass(model, image, 4)).max() > 1e-3


def test_upscale_is_deterministic_and_uint8() -> None:
    resolver = SuperResolver(random_generator(), tile=16)
    image = random_image(37, 29, seed=3)
    first, second = resolver.upscale(image, 4), resolver.upscale(image, 4)
    assert first.dtype == np.uint8 and first.shape == (148, 116, 3)
    assert np.array_equal(first, second)


def test_batch_matches_single_images() -> None:
    resolver = SuperResolver(random_generator(), tile=10)
    images = [random_image(23, 31, seed=i) for i in range(3)]
    batched = resolver.upscale_batch(images, 2)
    for image, out in zip(images, batched):
        assert np.abs(out.astype(int) - resolver.upscale(image, 2).astype(int)).max() <= 1


def test_iter_upscale_streams_the_same_image() -> None:
    resolver = SuperResolver(random_generator(), tile=8)
    image = random_image(20, 26, seed=5)
    whole = resolver.upscale(image, 2)
    rebuilt = np.zeros_like(whole)
    for y, x, tile in resolver.iter_upscale(image, 2):
        rebuilt[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    assert np.array_equal(rebuilt, whole)


def test_rgba_loses_alpha() -> None:
    resolver = SuperResolver(random_generator())
    rgb = random_image(12, 12)
    rgba = np.concatenate([rgb, np.full((12, 12, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(resolver.upscale(rgba, 2), resolver.upscale(rgb, 2))


@pytest.mark.parametrize("bad,message", [
    (np.zeros((8, 8), np.uint8), "grayscale"),
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 2), np.uint8), "channels"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    ([[0, 0, 0]], "numpy array"),
])
def test_bad_input_is_refused_clearly(bad, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SuperResolver(random_generator()).upscale(bad, 2)


def test_bad_scale_and_mixed_batch_are_refused() -> None:
    resolver = SuperResolver(random_generator())
    with pytest.raises(ValueError, match="scale"):
        resolver.upscale(random_image(8, 8), 3)
    with pytest.raises(ValueError, match="same-shape"):
        resolver.upscale_batch([random_image(8, 8), random_image(8, 9)], 2)


def test_oversized_output_is_refused_before_allocating() -> None:
    resolver = SuperResolver(random_generator(), max_output_bytes=10_000)
    with pytest.raises(ValueError, match="iter_upscale"):
        resolver.upscale(random_image(40, 40), 8)


def test_automatic_tiles_follow_the_memory_budget() -> None:
    model = random_generator()
    roomy = SuperResolver(model)
    assert roomy.tile_for(4, 60, 50) == 60  # fits: one window, no margin overhead
    tight = SuperResolver(model, max_batch_bytes=roomy.window_bytes(50, 50, 4))
    tile = tight.tile_for(4, 120, 90)
    windows = plan_tiles(120, 90, tile, tight.margin_for(4))
    assert len(windows) > 1
    assert tight.window_bytes(windows[0].rows.window_size, windows[0].cols.window_size, 4) <= tight.max_batch_bytes
    image = random_image(120, 90, seed=9)
    np.testing.assert_allclose(tight.upscale_float(image, 4), single_pass(model, image, 4), atol=1e-4)


def test_x2_via_x4_is_the_x4_output_area_averaged_and_tiles_seamlessly() -> None:
    model = random_generator()
    image = random_image(41, 37)
    resolver = SuperResolver(model, tile=12, max_batch_bytes=1, x2_path="x4")
    assert resolver.margin_for(2) == model.context_margin(4) > model.context_margin(2)
    x4 = torch.from_numpy(single_pass(model, image, 4)).permute(2, 0, 1)[None]
    expected = torch.nn.functional.avg_pool2d(x4, 2)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(resolver.upscale_float(image, 2), expected, atol=1e-5)
    # ... which is not what the cascade's own x2 stage gives, and other scales are untouched.
    assert np.abs(expected - single_pass(model, image, 2)).max() > 1e-3
    np.testing.assert_allclose(resolver.upscale_float(image, 4), single_pass(model, image, 4), atol=1e-5)


def test_x2_by_lanczos_matches_a_whole_image_lanczos_and_leaves_other_scales_to_the_model() -> None:
    model = random_generator()
    image = random_image(45, 38, seed=4)
    resolver = SuperResolver(model, tile=12, max_batch_bytes=1, x2_path="lanczos")
    assert resolver.margin_for(2) < model.context_margin(2)  # Lanczos needs less context
    # Tiled with 12-px cores, it is exactly the whole-image Lanczos (no seams).
    np.testing.assert_array_equal(resolver.upscale(image, 2), interpolate(image, 2, "lanczos"))
    np.testing.assert_allclose(resolver.upscale_float(image, 2),
                               interpolate(image, 2, "lanczos").astype(np.float32) / 255.0, atol=1e-6)
    np.testing.assert_allclose(resolver.upscale_float(image, 4), single_pass(model, image, 4), atol=1e-5)


def test_unknown_x2_path_is_refused() -> None:
    with pytest.raises(ValueError, match="x2_path"):
        SuperResolver(random_generator(), x2_path="bicubic")  # type: ignore[arg-type]


def test_uint8_output_is_the_float_output_rounded() -> None:
    """uint8 is rounded where the model ran (on a GPU: before the copy back); same values."""
    resolver = SuperResolver(random_generator(), tile=16)
    image = random_image(30, 21)
    expected = np.rint(resolver.upscale_float(image, 4) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(resolver.upscale(image, 4), expected)
