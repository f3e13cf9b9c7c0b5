"""Report shape (JSON, event checks, overlay), sampling, normalisation, configuration."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from core.settings import get_settings
from quality import ColourReference, Detection, QcConfig, Region, run_qc
from quality.colour import colour_stats, conditional_entropy, hellinger_distance, mean_delta_e, mutual_information
from quality.normalise import normalise
from quality.sampling import select_tiles, tiles_with_tissue
from quality.synthetic import colour_cast
from quality.tissue import tissue_mask
from schemas.common import QcCheckName
from schemas.events import QcCheck
from slide_io import ArraySlideSource, open_slide

DATA = get_settings().shared_data
QC = DATA / "qc_artefacts"
pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def load(path) -> np.ndarray:
    with open_slide(path) as slide:
        return slide.read_level(0)


@pytest.fixture(scope="module")
def he() -> np.ndarray:
    return load(DATA / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif")


@pytest.fixture(scope="module")
def reference() -> ColourReference:
    return ColourReference.from_pixels(load(QC / "histoqc/templates/template1.png"), "template1")


def test_report_is_json_and_maps_onto_the_event_model(reference) -> None:
    report = run_qc(QC / "histolab/high-nuclei-score-red-pen-level1.png", reference=reference)
    data = json.loads(report.to_json())
    assert data["passed"] is False and data["summary"].startswith("failed: ")
    assert {c["name"] for c in data["checks"]} == {"tissue", "colour_cast", "blur", "bubbles", "folds", "pen_marks"}
    folds = next(c for c in data["checks"] if c["name"] == "folds")
    assert folds["passed"] is False and folds["region_count"] == len(folds["regions"]) >= 1
    events = report.event_checks()
    assert all(isinstance(c, QcCheck) for c in events)
    assert {c.name for c in events} <= set(QcCheckName)
    by_name = {c.name.value: c for c in events}
    assert by_name["folds"].passed is False and by_name["folds"].threshold == report.check("folds").threshold
    assert QcCheck.model_validate_json(by_name["folds"].model_dump_json()) == by_name["folds"]


def test_overlay_png_shows_the_overview_with_flagged_regions_tinted() -> None:
    report = run_qc(QC / "histolab/high-nuclei-score-red-pen-level1.png")
    image = np.asarray(Image.open(io.BytesIO(report.overlay_png())).convert("RGB"))
    assert image.shape == report.overview.shape
    fold_mask = report.overlay_masks["folds"]
    assert fold_mask.any()
    assert not np.array_equal(image[fold_mask], report.overview[fold_mask])  # tinted


def test_sampled_mode_judges_a_fraction_of_the_tissue_tiles(he) -> None:
    mosaic = np.tile(he, (4, 4, 1))  # 4000 x 4000 px, 256 tissue tiles
    full = run_qc(mosaic)
    sampled = run_qc(mosaic, QcConfig(sampling={"mode": "sampled", "fraction": 0.1, "min_tiles": 8}))
    assert full.tiles_judged == full.tiles_with_tissue == 256
    assert sampled.tiles_judged == 26 and sampled.tiles_with_tissue == 256
    assert sampled.check("blur").passed == full.check("blur").passed


def test_sample_is_reproducible_and_respects_the_minimum() -> None:
    tissue = np.ones((100, 100), bool)
    _, tiles = tiles_with_tissue(tissue, 2560, 2560, 256, 0.25)
    config = QcConfig().sampling.model_copy(update={"mode": "sampled", "fraction": 0.05, "min_tiles": 12, "seed": 3})
    first, second = select_tiles(tiles, config), select_tiles(tiles, config)
    assert first == second and len(first) == 12
    other = select_tiles(tiles, config.model_copy(update={"seed": 4}))
    assert other != first


def test_mutual_information_and_distances_behave_as_defined() -> None:
    a = np.zeros((4, 4, 4))
    a[1, 1, 1] = 10
    b = np.zeros((4, 4, 4))
    b[2, 2, 2] = 5
    assert mutual_information(a, a) == pytest.approx(0)
    assert mutual_information(a, b) == pytest.approx(1)  # disjoint: one bit tells them apart
    assert conditional_entropy(a, b) == pytest.approx(0)
    assert hellinger_distance(a, a) == pytest.approx(0) and hellinger_distance(a, b) == pytest.approx(1)
    c = a + b
    assert 0 < mutual_information(a, c) < 1


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_normalisation_moves_colour_toward_the_standard(he, reference, method) -> None:
    cast = colour_cast(he, "yellow", 0.25)
    corrected, metrics = normalise(cast, reference.pixels, reference.stats, method)
    assert metrics.mutual_information_after < metrics.mutual_information_before
    assert metrics.delta_e_after < metrics.delta_e_before
    after = colour_stats(corrected, tissue_mask(corrected))
    assert mean_delta_e(after, reference.stats) == pytest.approx(metrics.delta_e_after, abs=1.5)


def test_normalisation_leaves_glass_untouched(reference) -> None:
    image = load(QC / "histolab/almost-white-2.png")
    tissue = tissue_mask(image)
    corrected, _ = normalise(image, reference.pixels, reference.stats, "reinhard")
    assert np.array_equal(corrected[~tissue], image[~tissue])


def test_enabled_normalisation_corrects_a_cast_and_reports_before_and_after(he, reference) -> None:
    cast = colour_cast(he, "yellow", 0.35)
    config = QcConfig(normalise={"enabled": True})
    report = run_qc(cast, config, reference=reference)
    check = report.check("colour_cast")
    assert check.passed and check.details.get("corrected") is True
    assert "corrected by reinhard" in check.reason
    assert report.normalised is not None and report.normalised.shape == cast.shape
    n = report.normalisation
    assert n["mutual_information_after"] < n["mutual_information_before"]
    strict = QcConfig(normalise={"enabled": True, "fixes_colour_cast": False})
    assert not run_qc(cast, strict, reference=reference).check("colour_cast").passed


def test_a_trained_detector_can_replace_a_classical_one(he) -> None:
    class BoxDetector:  # e.g. a YOLO model: returns boxes and a mask
        name = "folds"

        def detect(self, rgb: np.ndarray, tissue: np.ndarray, pixel_size: float | None = None) -> Detection:
            mask = np.zeros(tissue.shape, bool)
            mask[100:300, 200:600] = True
            return Detection(mask, [Region(200, 100, 400, 200, int(mask.sum()), 0.9)])

    report = run_qc(he, detectors=[BoxDetector()])
    folds = report.check("folds")
    assert not folds.passed and folds.region_count == 1
    assert (folds.regions[0].x, folds.regions[0].width) == (200, 400)
    assert not report.check("bubbles").judged  # only the detectors given are run


def test_inputs_may_be_array_source_or_path_with_the_same_result() -> None:
    path = QC / "focus/fqpath_sample_out_of_focus.png"
    pixels = load(path)
    scores = {run_qc(x).check("blur").score for x in (path, pixels, ArraySlideSource(pixels))}
    assert len(scores) == 1


def test_slide_mpp_rescales_the_blur_threshold(he) -> None:
    at_40x = run_qc(ArraySlideSource(he, mpp=0.25)).check("blur")
    at_5x = run_qc(ArraySlideSource(he, mpp=2.0)).check("blur")
    assert at_5x.details["tile_threshold"] == pytest.approx(at_40x.details["tile_threshold"] * 64)


def test_config_rejects_unknown_and_out_of_range_settings() -> None:
    with pytest.raises(ValidationError):
        QcConfig.model_validate({"blur": {"min_sharpnes": 1e-3}})
    with pytest.raises(ValidationError):
        QcConfig(sampling={"fraction": 1.5})
    config = QcConfig.model_validate_json('{"blur": {"max_blurred_fraction": 0.5}, "sampling": {"mode": "sampled"}}')
    assert config.blur.max_blurred_fraction == 0.5 and config.sampling.mode == "sampled"
