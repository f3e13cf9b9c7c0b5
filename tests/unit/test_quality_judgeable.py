"""Bad input gets a clear verdict or a clear "not judgeable: <why>", never a crash and never a
silent pass; ink that buries the tissue fails; nuclei and red cells are never ink."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.settings import get_settings
from quality import QcConfig, run_qc
from quality.datasets import load_rgb
from quality.pen import PenDetector
from quality.synthetic import ink_over, stain_variation
from quality.tissue import tissue_mask
from slide_io import ArraySlideSource

DATA = get_settings().shared_data
pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(scope="module")
def he() -> np.ndarray:
    return load_rgb(DATA / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif")


def not_judgeable(report) -> str:
    tissue = report.check("tissue")
    assert not report.passed and not tissue.passed
    assert tissue.reason.startswith("not judgeable: "), tissue.reason
    for name in ("colour_cast", "blur", "bubbles", "folds"):
        assert not report.check(name).judged  # no meaningless verdicts after a refusal
    return tissue.reason


def test_greyscale_scan_is_not_judgeable_for_lack_of_colour(he) -> None:
    grey = np.asarray(Image.fromarray(he).convert("L"))
    assert "no colour" in not_judgeable(run_qc(grey))


def test_sixteen_bit_and_alpha_inputs_get_the_verdict_of_the_8_bit_rgb(he) -> None:
    base = run_qc(he)
    for variant in (he.astype(np.uint16) * 257, np.dstack([he, np.full(he.shape[:2], 255, np.uint8)])):
        report = run_qc(variant)
        assert report.passed == base.passed
        assert report.check("colour_cast").score == pytest.approx(base.check("colour_cast").score, rel=1e-6)


def test_sixteen_bit_values_in_the_low_bits_are_not_a_brightfield_scan(he) -> None:
    reason = not_judgeable(run_qc(he.astype(np.uint16)))  # 0..255 in a 0..65535 container: black
    assert "not a brightfield scan" in reason


def test_fluorescence_is_not_a_brightfield_scan() -> None:
    from slide_io import open_slide

    with open_slide(DATA / "wsi_formats/hamamatsu_ndpi/test3-TRITC_2_560.ndpi") as slide:
        assert "not a brightfield scan" in not_judgeable(run_qc(slide))


@pytest.mark.parametrize("path", ["ihc_deepliif/tile_799_2.png", "ihc_deepliif/large_roi_ROI_1.png",
                                  "qc_artefacts/histoqc/coverslip_edge_ihc/coverslip_edge.png"])
def test_ihc_is_named_and_the_h_and_e_checks_are_not_judged(path) -> None:
    report = run_qc(load_rgb(DATA / path))
    for name in ("colour_cast", "folds"):
        check = report.check(name)
        assert not check.judged and "not an H&E stain" in check.reason and "brown" in check.reason
    assert report.check("tissue").details["stain"] == "non_he"
    assert report.check("blur").judged  # focus does not depend on the stain


def test_tile_mostly_covered_by_ink_fails_with_the_share_in_the_reason(he) -> None:
    reason = not_judgeable(run_qc(ink_over(he, 0.97)))
    assert "ink or debris covers" in reason
    share = int(reason.split("covers ")[1].split("%")[0])
    assert 90 <= share <= 100


def test_pen_beside_tissue_stays_advisory(he) -> None:
    marked = ink_over(he, 0.15)  # a coloured-in margin beside the tissue
    report = run_qc(marked)
    pen = report.check("pen_marks")
    assert not pen.passed and not pen.affects_verdict
    assert report.check("tissue").passed and "ink covers" in report.check("tissue").reason


@pytest.mark.parametrize("path", ["qc_artefacts/histolab/no-tissue.png", "qc_artefacts/histolab/no-tissue-line.png",
                                  "qc_artefacts/histolab/no-tissue-red-pen.png", "crchistophenotypes/crc_img76.bmp"])
def test_empty_glass_never_passes(path) -> None:
    report = run_qc(load_rgb(DATA / path))
    assert not report.passed
    if "pen" not in path:  # out-of-focus ink on glass leaves a halo read as tissue; it fails on blur
        assert not report.check("tissue").passed


@pytest.mark.parametrize("h_gain", [1.0, 1.8, 2.5])
def test_nuclei_and_red_cells_are_never_ink(h_gain) -> None:
    # Strongly stained nuclei (haematoxylin x2.5) and the red cells of a kidney tile used to be
    # called blue/black/red ink.
    for path in ("monuseg2018/TCGA-B0-5698-01Z-00-DX1.tif", "monuseg2018/TCGA-AO-A0J2-01A-01-BSA.tif",
                 "histolab_tiles/high-nuclei-score-level0.png"):
        image = stain_variation(load_rgb(DATA / path)[:, :, :3], h_gain, 1.0)
        assert PenDetector().detect(image, tissue_mask(image)).area_px == 0, path


def test_blue_tinted_nuclei_are_not_blue_ink(he) -> None:
    # Nuclei tinted toward blue (hue ~225 deg, as with some haematoxylins): dark and compact.
    hed_blue = he.copy()
    nuclei = he.astype(int).sum(axis=-1) < 300
    hed_blue[nuclei] = (40, 70, 150)
    assert PenDetector().detect(hed_blue, tissue_mask(hed_blue)).area_px == 0
    stroke = hed_blue.copy()
    stroke[480:520, 50:950] = (40, 90, 230)  # a real blue stroke across it is still ink
    assert PenDetector().detect(stroke, tissue_mask(stroke)).area_px > 0.6 * 40 * 900


@pytest.mark.parametrize(("path", "mpp"), [("monuseg2018/TCGA-HE-7129-01Z-00-DX1.tif", 0.25),  # red cells in vessels
                                             ("crchistophenotypes/crc_img11.bmp", 0.55)])  # black pigment
def test_look_alikes_of_a_markers_shape_but_not_its_size_are_not_ink(path, mpp) -> None:
    # Both are ink in the image's own terms (a long red band, a black blob of 4 % of the image)
    # but tens of microns across: with the slide's pixel size they are not ink.
    image = load_rgb(DATA / path)[:, :, :3]
    tissue = tissue_mask(image)
    assert PenDetector().detect(image, tissue).area_px > 0
    assert PenDetector().detect(image, tissue, pixel_size=mpp).area_px == 0
    assert run_qc(ArraySlideSource(image, mpp=mpp)).check("pen_marks").score == 0


def test_a_marker_stroke_is_ink_at_any_known_pixel_size(he) -> None:
    stroke = he.copy()
    stroke[480:520, 50:950] = (200, 30, 50)  # 900 px long: 1.8 mm on a 2 um/px overview
    tissue = tissue_mask(stroke)
    assert PenDetector().detect(stroke, tissue, pixel_size=2.0).area_px > 0.6 * 40 * 900
    # The same band 225 um long (0.25 um/px) is a vessel's length, not a marker's.
    assert PenDetector().detect(stroke, tissue, pixel_size=0.25).area_px == 0


def test_config_for_judgeability_is_validated() -> None:
    assert QcConfig().judgeable.max_covered_share == 0.5
    with pytest.raises(ValueError):
        QcConfig(judgeable={"max_covered_share": 0})
