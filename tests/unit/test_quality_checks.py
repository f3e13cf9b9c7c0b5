"""QC checks on real images from ../shared/data and controlled synthetic artefacts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.settings import get_settings
from quality import ColourReference, QcConfig, run_qc
from quality.bubbles import BubbleDetector
from quality.folds import FoldDetector
from quality.pen import PenDetector
from quality.synthetic import add_bubble, add_fold, colour_cast, gaussian_blur
from quality.tissue import tissue_mask
from slide_io import open_slide

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
    return load(DATA / "monuseg2018/TCGA-18-5592-01Z-00-DX1.tif")


@pytest.fixture(scope="module")
def reference() -> ColourReference:
    return ColourReference.from_pixels(load(QC / "histoqc/templates/template1.png"), "template1")


def test_blur_flags_the_real_out_of_focus_scan_and_passes_the_in_focus_one() -> None:
    sharp = run_qc(QC / "focus/fqpath_sample_in_focus.png").check("blur")
    blurred = run_qc(QC / "focus/fqpath_sample_out_of_focus.png").check("blur")
    assert sharp.judged and sharp.passed
    assert blurred.judged and not blurred.passed
    assert blurred.score > sharp.score
    assert "blurred" in blurred.reason and "laplacian variance" in blurred.reason


def test_blur_is_localised_to_the_blurred_half(he) -> None:
    half = he.copy()
    half[:, 500:] = gaussian_blur(he, 3.0)[:, 500:]
    check = run_qc(half).check("blur")
    assert not check.passed and check.region_count == 1
    region = check.regions[0]
    assert region.x >= 400 and region.x + region.width == 1000  # right half only


def test_sharpness_threshold_follows_the_pixel_size() -> None:
    blur = QcConfig().blur
    assert blur.min_sharpness_at(None) == blur.min_sharpness
    assert blur.min_sharpness_at(blur.reference_mpp * 4) == pytest.approx(blur.min_sharpness * 16)


def test_colour_cast_is_flagged_against_one_standard_image_when_asked(he, reference) -> None:
    by_image = QcConfig(colour={"metric": "mutual_information"})
    clean = run_qc(he, by_image, reference=reference).check("colour_cast")
    cast = run_qc(colour_cast(he, "yellow", 0.35), by_image, reference=reference).check("colour_cast")
    assert cast.judged and not cast.passed
    assert cast.score > clean.score
    assert cast.details["conditional_entropy_bits"] == pytest.approx(1 - cast.score)
    assert "db=+" in cast.reason  # yellow: b* goes up
    by_distance = QcConfig(colour={"metric": "histogram_distance"})
    assert not run_qc(colour_cast(he, "yellow", 0.35), by_distance, reference=reference).check("colour_cast").passed


def test_colour_is_judged_by_default_against_the_shipped_standard(he) -> None:
    clean = run_qc(he).check("colour_cast")
    cast = run_qc(colour_cast(he, "yellow", 0.35)).check("colour_cast")
    assert clean.judged and clean.passed
    assert cast.judged and not cast.passed and cast.score > 2 * clean.score
    assert "he_default" in cast.reason and "b_" in cast.reason  # yellow: b* of some pixel group is off


def test_colour_image_metrics_need_a_reference_image(he) -> None:
    check = run_qc(he, QcConfig(colour={"metric": "mutual_information"})).check("colour_cast")
    assert not check.judged and check.passed and "reference" in check.reason


def test_colour_reference_from_the_config_path_is_reported_beside_the_standard(he) -> None:
    config = QcConfig(colour={"reference_path": QC / "histoqc/templates/template1.png"})
    check = run_qc(colour_cast(he, "yellow", 0.35), config).check("colour_cast")
    assert check.judged and not check.passed and check.details["reference"] == "template1.png"
    assert check.details["mutual_information_bits"] > 0


def test_empty_glass_is_not_judged() -> None:
    report = run_qc(QC / "histolab/no-tissue.png")
    assert not report.passed and not report.check("tissue").passed
    assert "no tissue" in report.check("tissue").reason
    for name in ("blur", "colour_cast", "folds", "bubbles"):
        check = report.check(name)
        assert not check.judged and check.passed and check.reason.startswith("not judged")


def test_glass_tiles_beside_tissue_are_not_judged_for_blur(he) -> None:
    glass = load(QC / "histolab/no-tissue.png")[:, :, :3]
    slide = np.full((1000, 2000, 3), 255, np.uint8)
    slide[:, :1000] = he
    slide[:512, 1000:1512] = glass
    slide[512:1024, 1000:1512] = glass[:488]
    report = run_qc(slide)
    assert report.passed
    assert 14 <= report.tiles_with_tissue <= 17  # the H&E half only (16 tiles)
    assert report.check("blur").details["judged_tiles"] == report.tiles_with_tissue


def test_synthetic_fold_is_found_where_it_was_painted(he) -> None:
    folded, band = add_fold(he, np.random.default_rng(5))
    tissue = tissue_mask(folded)
    detection = FoldDetector().detect(folded, tissue)
    assert detection.regions
    assert (detection.mask & band).sum() / detection.mask.sum() > 0.6
    assert not run_qc(folded).check("folds").passed
    assert run_qc(he).check("folds").passed


def test_real_tissue_fold_is_flagged() -> None:
    check = run_qc(QC / "histolab/high-nuclei-score-red-pen-level1.png").check("folds")
    assert not check.passed and check.region_count >= 1


def test_synthetic_bubble_is_found_and_localised(he) -> None:
    bubbled, disc = add_bubble(he, np.random.default_rng(11))
    detection = BubbleDetector().detect(bubbled, tissue_mask(bubbled))
    assert len(detection.regions) == 1
    iou = (detection.mask & disc).sum() / (detection.mask | disc).sum()
    assert iou > 0.8
    assert run_qc(bubbled).check("bubbles").region_count == 1
    assert run_qc(he).check("bubbles").region_count == 0


@pytest.mark.parametrize(
    ("name", "min_recall"),
    # Red recall is low: HistoQC's red pen is faint and broken, and red ink must now also be a
    # blob or a stroke (red blood cells are not ink), which drops its shortest dashes.
    [("pen_1k/pen_green", 0.85), ("pen_1k/pen_black", 0.7), ("pen_1k/pen_red", 0.3),
     ("pen_markings_he/pen_red", 0.35), ("pen_markings_he/pen_green", 0.7)],
)
def test_pen_marks_match_histoqc_labels(name, min_recall) -> None:
    image = load(QC / f"histoqc/{name}.png")
    truth = np.asarray(Image.open(QC / f"histoqc/{name}_mask.png").convert("L")) > 0
    found = PenDetector().detect(image, tissue_mask(image)).mask
    recall = (found & truth).sum() / truth.sum()
    precision = (found & truth).sum() / found.sum()
    assert recall >= min_recall and precision >= 0.9


def test_pen_marks_are_reported_but_advisory_by_default() -> None:
    report = run_qc(QC / "histolab/tcga-green-pen.png")
    pen = report.check("pen_marks")
    assert not pen.passed and not pen.affects_verdict and pen.region_count >= 1
    assert "pen_marks" not in [c.name for c in report.failed]
    binding = run_qc(QC / "histolab/tcga-green-pen.png", QcConfig(pen={"affects_verdict": True}))
    assert "pen_marks" in [c.name for c in binding.failed]


def test_clean_tissue_passes_every_check(he, reference) -> None:
    report = run_qc(he, reference=reference)
    assert report.passed, report.summary()
    assert all(c.judged for c in report.checks)


@pytest.mark.parametrize("ink", [(20, 20, 25), (30, 60, 200), (200, 30, 40), (40, 150, 60)])
def test_a_pen_circle_is_not_an_air_bubble(he, ink) -> None:
    # A ring drawn with a marker (black, blue, red, green) is as round as a bubble's rim; its
    # colour or its breadth says it is ink.
    yy, xx = np.mgrid[:1000, :1000]
    ring = np.abs(np.hypot(xx - 500, yy - 480) - 260) < 6
    circled = he.copy()
    circled[ring] = ink
    assert BubbleDetector().detect(circled, tissue_mask(circled)).regions == []
    assert run_qc(circled).check("bubbles").passed


@pytest.mark.parametrize("path", ["histolab/diagnostic-slide-thumb-rgb.png", "histoqc/pen_1k/pen_black.png",
                                  "histolab/tcga-red-pen.png"])
def test_real_pen_marks_are_never_bubbles(path) -> None:
    image = load(QC / path)[:, :, :3]
    assert BubbleDetector().detect(image, tissue_mask(image)).regions == []


def test_the_edge_of_dark_pigment_is_not_a_bubble_rim() -> None:
    from quality.datasets import load_rgb

    image = load_rgb(DATA / "crchistophenotypes/crc_img11.bmp")  # black pigment clumps on glass
    assert BubbleDetector().detect(image, tissue_mask(image)).regions == []
