"""Rate-distortion bench: the pure pieces (rate, frontier, equal-rate interpolation) and one
tiny end-to-end pass over synthetic images with a random tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.rate_distortion import (
    LOSSLESS,
    Sample,
    attach_equal_rate,
    best_at_rate,
    bits_per_pixel,
    centre_crop,
    direct_points,
    frontier,
    header_bytes,
    j2k_table,
    jpeg,
    jpeg2000,
    jpegxl,
    main_table,
    smallest_lossless,
    stored_points,
    summarise,
    value_at_rate,
)
from model_zoo.inference import SuperResolver
from model_zoo.testing import random_generator, random_image, single_thread


def test_rate_is_bits_per_hr_pixel() -> None:
    assert bits_per_pixel(1000, (100, 80, 3)) == pytest.approx(1.0)
    assert bits_per_pixel(64, (16, 16)) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        bits_per_pixel(10, (0, 5))


def test_frontier_drops_dominated_points_and_sorts_by_rate() -> None:
    points = [(2.0, 30.0), (1.0, 28.0), (1.5, 27.0), (3.0, 29.0), (0.5, 25.0), (2.0, 31.0)]
    # (1.5, 27) is worse than the cheaper (1, 28); (3, 29) and (2, 30) lose to (2, 31).
    assert frontier(points) == [4, 1, 5]
    # Lower is better (colour difference): the order of goodness flips.
    errors = [(1.0, 3.0), (2.0, 3.5), (3.0, 1.0)]
    assert frontier(errors, higher_is_better=False) == [0, 2]
    assert frontier([(1.0, math.nan), (2.0, 5.0)]) == [1]


def test_value_at_rate_interpolates_in_log_rate_and_never_extrapolates() -> None:
    curve = [(1.0, 20.0), (4.0, 30.0), (2.0, 24.0)]
    assert value_at_rate(2.0, curve) == pytest.approx(24.0)
    assert value_at_rate(math.sqrt(2.0), curve) == pytest.approx(22.0)  # half way in log2
    assert value_at_rate(3.0, curve) == pytest.approx(24.0 + 6.0 * math.log2(1.5))
    assert math.isnan(value_at_rate(0.5, curve)) and math.isnan(value_at_rate(5.0, curve))


def test_best_at_rate_takes_the_best_codec_covering_the_rate() -> None:
    curves = {"a": [(1.0, 20.0), (4.0, 30.0)], "b": [(1.0, 24.0), (2.0, 26.0)], "c": [(8.0, 40.0), (9.0, 41.0)]}
    assert best_at_rate(1.5, curves) == (pytest.approx(24.0 + 2.0 * math.log2(1.5)), "b")
    assert best_at_rate(3.0, curves) == (pytest.approx(20.0 + 5.0 * math.log2(3.0)), "a")
    value, name = best_at_rate(6.0, curves)
    assert math.isnan(value) and name is None
    errors = {"a": [(1.0, 3.0), (2.0, 2.0)], "b": [(1.0, 2.5), (2.0, 2.2)]}
    assert best_at_rate(1.0, errors, higher_is_better=False) == (pytest.approx(2.5), "b")


def test_headers_are_small_and_lossless_round_trips() -> None:
    image = random_image(24, 16)
    headers = {c.label: header_bytes(c) for c in LOSSLESS}
    codec, payload = smallest_lossless(image, headers)
    assert np.array_equal(codec.decode(codec.encode(image)), image)
    assert payload == min(len(c.encode(image)) - headers[c.label] for c in LOSSLESS)
    assert 0 < header_bytes(jpeg(90, "444")) < 2000


def test_centre_crop_is_a_multiple_of_every_scale() -> None:
    image = np.zeros((70, 101, 3), np.uint8)
    assert centre_crop(image, 64).shape == (64, 64, 3)
    assert centre_crop(image, 512).shape == (64, 96, 3)


def test_one_image_end_to_end() -> None:
    hr = random_image(64, 64)
    sample = Sample("synthetic", "synthetic", "40x", hr)
    direct = ([jpeg(q, "420") for q in (10, 50, 95)] + [jpegxl(d) for d in (0.5, 2, 8)]
              + [jpeg2000(db) for db in (20, 30, 40)])
    stored = [jpeg(90, "444"), jpegxl(1.0)]
    headers = {c.label: header_bytes(c) for c in [*direct, *stored, *LOSSLESS]}
    with single_thread():
        models = {"tiny": SuperResolver(random_generator())}
        points = direct_points(sample, direct, headers)
        points += stored_points(sample, 4, stored, models, headers)
    attach_equal_rate(points)
    lr_points = [p for p in points if p.stored == "10x"]
    # bicubic only for today's codec and lossless; the model for every LR encoding.
    assert {(p.codec.split(" (")[0], p.method) for p in lr_points} == {
        ("JPEG 4:4:4 q90", "bicubic"), ("JPEG 4:4:4 q90", "tiny"), ("JPEG XL d1", "bicubic"), ("JPEG XL d1", "tiny"),
        ("lossless", "bicubic"), ("lossless", "tiny")}
    for p in lr_points:
        diff = p.equal_rate["psnr"]["diff"]
        best = p.equal_rate["psnr"]["best_40x"]
        assert math.isnan(best) or diff == pytest.approx(p.psnr - best)
        j2k = p.equal_rate["psnr"]["j2k"]
        assert math.isnan(j2k) or (p.equal_rate["psnr"]["diff_j2k"] == pytest.approx(p.psnr - j2k) and j2k <= best)
    summary = summarise(points)
    assert any(r["codec"] == "lossless" and r["method"] == "tiny" for r in summary)
    table = main_table(summary, ["tiny"])
    assert "| 10x | JPEG 4:4:4 q90 |" in table and "| 10x | lossless (" in table
    versus_j2k = j2k_table(summary, ["tiny"])
    assert "| 10x | JPEG XL d1 |" in versus_j2k and "vs JPEG 2000" in versus_j2k
