"""The colour standard as a distribution: profiles, descriptor, calibration, update, persistence,
and its verdicts on real clean images, stain variation and casts."""

from __future__ import annotations

import numpy as np
import pytest

from core.settings import get_settings
from quality import QcConfig, run_qc
from quality.datasets import load_rgb
from quality.standard import (
    DESCRIPTOR_NAMES,
    ColourProfile,
    ColourStandard,
    build,
    colour_profile,
    load_standard,
    save_standard,
    updated,
)
from quality.synthetic import colour_cast, stain_variation
from quality.tissue import tissue_mask

DATA = get_settings().shared_data
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")


def lab_pixels(rng: np.random.Generator, n: int, centre: tuple[float, float, float]) -> np.ndarray:
    return np.column_stack([rng.uniform(10, 95, n), rng.normal(centre[1], 5, n), rng.normal(centre[2], 5, n)])


def test_profiles_add_up_to_the_profile_of_both_images() -> None:
    rng = np.random.default_rng(0)
    a, b = lab_pixels(rng, 500, (0, 20, -10)), lab_pixels(rng, 300, (0, 30, -20))
    ta, tb = rng.random(500) > 0.3, rng.random(300) > 0.3
    merged = ColourProfile.from_lab(a, ta) + ColourProfile.from_lab(b, tb)
    whole = ColourProfile.from_lab(np.vstack([a, b]), np.concatenate([ta, tb]))
    assert np.allclose(merged.bins, whole.bins)
    assert np.allclose(merged.descriptor(), whole.descriptor())


def test_descriptor_reads_the_dark_light_and_bright_ends() -> None:
    # Tissue: dark pixels blue-ish (a*=10, b*=-30), light ones pink (a*=30, b*=0); glass neutral and brightest.
    dark = np.column_stack([np.full(400, 30.0), np.full(400, 10.0), np.full(400, -30.0)])
    light = np.column_stack([np.full(400, 80.0), np.full(400, 30.0), np.full(400, 0.0)])
    middle = np.column_stack([np.full(1200, 55.0), np.full(1200, 20.0), np.full(1200, -15.0)])
    glass = np.column_stack([np.full(100, 97.0), np.full(100, 0.0), np.full(100, 2.0)])
    lab = np.vstack([dark, light, middle, glass])
    tissue = np.arange(len(lab)) < 2000
    d = dict(zip(DESCRIPTOR_NAMES, ColourProfile.from_lab(lab, tissue).descriptor()))
    assert (d["a_dark"], d["b_dark"]) == pytest.approx((10, -30))
    assert (d["a_light"], d["b_light"]) == pytest.approx((30, 0))
    assert (d["a_bright"], d["b_bright"]) == pytest.approx((0, 2))  # glass, not tissue
    assert d["L_mean"] == pytest.approx((400 * 30 + 400 * 80 + 1200 * 55) / 2000)


def test_descriptor_of_no_tissue_is_nan_and_does_not_move_the_standard() -> None:
    empty = ColourProfile.from_lab(np.full((10, 3), 95.0), np.zeros(10, bool))
    assert np.isnan(empty.descriptor()).all()
    standard = ColourStandard(np.zeros(9), np.eye(9), 10, 3.0)
    assert updated(standard, empty.descriptor()) is standard


def test_calibration_is_the_distance_unseen_sources_reach() -> None:
    rng = np.random.default_rng(1)
    # Three "labs", each offset from the others: the held-out scale must cover that offset.
    offsets = np.zeros((3, 9))
    offsets[:, 1] = (-4, 0, 4)
    descriptors = np.vstack([rng.normal(0, 1, (40, 9)) + offsets[i] for i in range(3)])
    sources = [f"lab{i}" for i in range(3) for _ in range(40)]
    standard = build(descriptors, sources)
    assert standard.count == 120 and standard.sources == ("lab0", "lab1", "lab2")
    scores = np.array([standard.score(d) for d in descriptors])
    assert np.quantile(scores, 0.99) <= 1.0  # in-sample slides sit inside the calibrated edge
    far = descriptors.mean(axis=0) + 4 * standard.scale * np.sqrt(np.diag(standard.covariance)) * np.eye(9)[7]
    assert standard.score(far) > 2
    with pytest.raises(ValueError, match="two sources"):
        build(descriptors, ["one"] * len(descriptors))


def test_update_moves_the_mean_by_one_over_n_and_forgets_slowly() -> None:
    standard = ColourStandard(np.zeros(9), np.eye(9), count=9, scale=2.0)
    x = np.full(9, 10.0)
    once = updated(standard, x)
    assert once.count == 10 and once.mean == pytest.approx(np.full(9, 1.0))
    assert once.covariance[0, 0] > standard.covariance[0, 0] * 0.9  # the spread grew along x
    capped = ColourStandard(np.zeros(9), np.eye(9), count=5000, scale=2.0)
    step = updated(capped, x, memory=1000)
    assert step.mean == pytest.approx(np.full(9, 10.0 / 1000))  # bounded influence of one slide
    assert step.count == 1000 and step.scale == capped.scale


def test_standard_round_trips_through_its_json_file(tmp_path) -> None:
    rng = np.random.default_rng(2)
    standard = build(rng.normal(size=(30, 9)), ["a"] * 15 + ["b"] * 15, name="lab")
    save_standard(standard, tmp_path / "s.json")
    loaded = load_standard(tmp_path / "s.json")
    assert loaded.name == "lab" and loaded.sources == ("a", "b")
    assert np.allclose(loaded.mean, standard.mean) and np.allclose(loaded.covariance, standard.covariance)
    assert (tmp_path / "s.json").stat().st_size < 8000  # a few KB of numbers


def test_shipped_standard_is_calibrated_and_loads() -> None:
    standard = load_standard()
    assert len(standard.sources) >= 8 and standard.count >= 100 and standard.scale > 0


@needs_data
@pytest.mark.parametrize("path", ["glas/glas_testA_1.png", "prostate_gleason/gleasongrade_test10.jpg",
                                  "breakhis/SOB_B_F-14-25197-200-032.png",
                                  "qc_artefacts/histoqc/templates/template3.png"])
def test_clean_slides_and_their_stain_variation_pass_strong_casts_fail(path) -> None:
    # These all failed against the single template image (MI 0.70-0.84 bits).
    he = load_rgb(DATA / path)
    assert run_qc(he).check("colour_cast").passed
    for h, e in ((0.75, 1.3), (1.35, 0.8)):
        assert run_qc(stain_variation(he, h, e)).check("colour_cast").passed, (h, e)
    for cast in ("yellow", "blue", "green"):
        check = run_qc(colour_cast(he, cast, 0.3)).check("colour_cast")
        assert not check.passed, (cast, check.reason)


@needs_data
def test_the_descriptor_run_qc_reports_can_update_a_lab_standard() -> None:
    he = load_rgb(DATA / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif")
    report = run_qc(he, QcConfig())
    descriptor = np.array(report.check("colour_cast").details["descriptor"])
    direct = colour_profile(he, tissue_mask(he)).descriptor()
    assert descriptor == pytest.approx(direct, abs=2.0)  # tiles vs whole image: same colours
    before = load_standard()
    after = updated(before, descriptor)
    assert after.count == before.count + 1
    assert np.linalg.norm(after.mean - descriptor) < np.linalg.norm(before.mean - descriptor)
