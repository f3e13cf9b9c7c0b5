"""Evaluation and bench helpers on a tiny model: rows, tables, panels, FLOP counts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from model_zoo.bench import flops_per_output_pixel
from model_zoo.degradation import box_downsample, to_uint8
from model_zoo.evaluate import (
    BASELINES,
    evaluate_image,
    markdown,
    panel,
    per_source_markdown,
    stored_lr,
    summarise,
)
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


def test_stored_lr_is_the_codec_round_trip_and_one_codec_at_a_time() -> None:
    lr = to_uint8(box_downsample(random_image(64, 64, seed=4), 2))
    assert stored_lr(lr) is lr
    jxl, jpeg = stored_lr(lr, lr_jpegxl=1.0), stored_lr(lr, lr_jpeg=90)
    assert jxl.shape == jpeg.shape == lr.shape and jxl.dtype == np.uint8
    assert not np.array_equal(jxl, lr) and not np.array_equal(jxl, jpeg)
    assert np.abs(stored_lr(lr, lr_jpegxl=0.1).astype(int) - lr).mean() < np.abs(jxl.astype(int) - lr).mean()
    with pytest.raises(ValueError, match="one LR codec"):
        stored_lr(lr, lr_jpeg=90, lr_jpegxl=1.0)
    rows, _, used = evaluate_image("img", random_image(64, 48), 4, {}, lr_jpegxl=1.0)
    assert [r.method for r in rows] == list(BASELINES) and used.shape == (16, 12, 3)
    assert "JPEG XL distance 1" in markdown(summarise(rows), ["img"], lr_jpegxl=1.0)
    avif = stored_lr(lr, lr_avif=70)
    assert avif.shape == lr.shape and avif.dtype == np.uint8 and not np.array_equal(avif, lr)
    assert np.abs(stored_lr(lr, lr_avif=95).astype(int) - lr).mean() < np.abs(avif.astype(int) - lr).mean()
    with pytest.raises(ValueError, match="one LR codec"):
        stored_lr(lr, lr_jpegxl=1.0, lr_avif=70)
    assert "AVIF quality 70" in markdown(summarise(rows), ["img"], lr_avif=70)


def test_flops_per_output_pixel_fall_with_scale() -> None:
    """The LR encoder's work is shared by more output pixels at higher scales."""
    per_scale = [flops_per_output_pixel(random_generator(TINY), s, size=16) for s in (2, 4, 8)]
    assert per_scale[0] > per_scale[1] > per_scale[2] > 0


def test_per_source_table_groups_images_by_collection_and_x2_variant_only_at_x2() -> None:
    model = random_generator()
    models = {"tiny": SuperResolver(model), "tiny (x4/2)": SuperResolver(model, x2_path="x4")}
    rows = []
    for name in ("a1", "a2", "b1"):
        for scale in (2, 4):
            rows += evaluate_image(name, random_image(32, 32, seed=len(rows)), scale, models)[0]
    assert {r.method for r in rows if r.scale == 4} == {*BASELINES, "tiny"}
    assert {r.method for r in rows if r.scale == 2} == {*BASELINES, "tiny", "tiny (x4/2)"}
    assert "(x4/2)" not in summarise(rows)[4] and "nan" not in markdown(summarise(rows), ["a1", "a2", "b1"])
    text = per_source_markdown(rows, {"a1": "alpha", "a2": "alpha", "b1": "beta"})
    assert "| alpha | 2 | x2 |" in text and "| beta | 1 | x4 |" in text
    alpha_x4 = [r.psnr for r in rows if r.image in ("a1", "a2") and r.scale == 4 and r.method == "tiny"]
    assert f"{np.mean(alpha_x4):.2f} /" in text.split("| alpha | 2 | x4 |")[1].splitlines()[0]
