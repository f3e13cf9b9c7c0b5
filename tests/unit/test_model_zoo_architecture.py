"""The generator: fully convolutional, any input size, cascade outputs, receptive field."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from model_zoo.architecture import CascadeGenerator, GeneratorConfig
from model_zoo.registry import ARCHITECTURES
from model_zoo.testing import TINY, random_generator, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_no_fully_connected_layer(arch: str) -> None:
    model = CascadeGenerator(ARCHITECTURES[arch])
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


@pytest.mark.parametrize("size", [(1, 1), (3, 17), (16, 16), (29, 10)])
@pytest.mark.parametrize("upsample", ["pixel_shuffle", "transposed"])
def test_any_input_size_gives_every_scale(size: tuple[int, int], upsample: str) -> None:
    cfg = GeneratorConfig(channels=8, blocks=1, stage_channels=(8, 4, 4), upsample=upsample)
    model = random_generator(cfg)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        outputs = model(x)
    assert sorted(outputs) == [2, 4, 8]
    for scale, y in outputs.items():
        assert y.shape == (2, 3, size[0] * scale, size[1] * scale)
        assert torch.isfinite(y).all()


def test_smaller_scale_skips_later_stages() -> None:
    model = random_generator()
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        full, partial = model(x, 8), model(x, 4)
    assert sorted(partial) == [2, 4]
    torch.testing.assert_close(partial[4], full[4])


def test_fresh_generator_starts_as_bilinear_cascade() -> None:
    model = CascadeGenerator(TINY).eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        y = model(x, 4)[4]
    expected = nn.functional.interpolate(
        nn.functional.interpolate(x, scale_factor=2, mode="bilinear"), scale_factor=2, mode="bilinear")
    torch.testing.assert_close(y, expected)


def test_unsupported_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="scale"):
        random_generator()(torch.rand(1, 3, 4, 4), 3)


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("upsample", ["pixel_shuffle", "transposed"])
def test_context_margin_covers_receptive_field(scale: int, upsample: str) -> None:
    model = random_generator(GeneratorConfig(channels=8, blocks=2, stage_channels=(8, 8, 4), upsample=upsample))
    margin = model.context_margin(scale)
    size = 2 * margin + 12
    x = torch.rand(1, 3, size, size)
    x2 = x.clone()
    x2[..., :, 0] = 1.0 - x2[..., :, 0]  # change the whole first LR column
    with torch.no_grad():
        y, y2 = model(x, scale)[scale], model(x2, scale)[scale]
    changed = (y - y2).abs().amax(dim=(0, 1, 2)) > 1e-6
    columns = torch.nonzero(changed).flatten()
    reach_lr = (int(columns.max()) + 1) / scale
    assert reach_lr > 1  # the change does propagate...
    assert reach_lr <= margin  # ...but never beyond the declared context margin
