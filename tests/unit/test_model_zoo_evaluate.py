"""Evaluation and bench helpers on a tiny model: rows, tables, panels, FLOP counts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from model_zoo.bench import flops_per_output_pixel
from model_zoo.evaluate import BASELINES, evaluate_image, markdown, panel, summarise
from model_zoo.inference import SuperResolver
from model_zoo.testing import TINY, random_generator, random_image, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_evaluation_compares_model_with_every_baseline() -> None:
    models = {"tiny": SuperResolver(random_generator())}
    hr = random_image(64, 48)
    rows, outputs, lr = evaluate_image("img", hr, 4, models, lr_jpeg=90)
    assert lr.shape == (16, 12, 3)
    assert [r.method for r in rows] == [*BASELINES, "tiny"]
    assert all(out.shape == hr.shape for out in outputs.values())
    assert all(np.isfinite([r.psnr, r.ssim, r.delta_e]).all() for r in rows)
    table = summarise(rows)
    text = markdown(table, ["img"], lr_jpeg=90)
    assert "| x4 | tiny |" in text and "JPEG quality 90" in text
    image = panel(lr, outputs, hr, 4, size=32)
    assert image.size == (4 * (32 + 4) - 4, 32 + 16)  # LR | bicubic | tiny | HR


def test_flops_per_output_pixel_fall_with_scale() -> None:
    """The LR encoder's work is shared by more output pixels at higher scales."""
    per_scale = [flops_per_output_pixel(random_generator(TINY), s, size=16) for s in (2, 4, 8)]
    assert per_scale[0] > per_scale[1] > per_scale[2] > 0
