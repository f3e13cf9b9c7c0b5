"""Fold detector regressions on real slides: dense normal tissue (keratin, colon crypts, glands,
lymphoid tissue) must pass, real and synthetic folds must not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from core.settings import get_settings
from quality import QcConfig, run_qc
from quality.artefacts import Detector
from quality.datasets import load_rgb
from quality.folds import FoldDetector
from quality.qc import fold_detector
from quality.synthetic import add_fold
from quality.tissue import tissue_mask
from slide_io import open_slide

DATA = get_settings().shared_data
QC = DATA / "qc_artefacts"
CMU1 = DATA / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs"
RED_PEN_FOLD = QC / "histolab/high-nuclei-score-red-pen-level1.png"
CLASSICAL = QcConfig(folds={"detector": "classical"})  # these tests are of quality/folds.py
pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def load(path) -> np.ndarray:
    with open_slide(path) as slide:
        return slide.read_level(0)


def test_normal_skin_with_dense_keratin_passes_the_fold_check() -> None:
    # CMU-1 (Aperio sample, normal skin): its keratin / granular layer is dark and
    # haematoxylin-heavy, which a density-only rule called a fold covering 10% of the tissue.
    with open_slide(CMU1) as slide:
        report = run_qc(slide, CLASSICAL)
    folds = report.check("folds")
    assert folds.judged and folds.passed and folds.region_count == 0
    assert report.passed, report.summary()


def test_real_tissue_fold_is_still_flagged_and_localised_on_the_dark_band() -> None:
    image = load(RED_PEN_FOLD)[:, :, :3]
    report = run_qc(image, CLASSICAL)
    folds = report.check("folds")
    assert not folds.passed and folds.region_count == 1
    # The fold is the dark band crossing the image from the left edge at about y = 240 down
    # to the right edge at about y = 370; its box must span the width and sit on that band.
    region = folds.regions[0]
    assert region.x < 20 and region.x + region.width > 400
    assert 180 < region.y and region.y + region.height < 420
    band = report.overlay_masks["folds"]
    assert band[:, :60].any(axis=1)[200:300].any()  # left end of the band is inside the mask


@pytest.mark.parametrize("detector", ["classical", "learned"])
def test_fold_needs_both_stains_raised_against_the_tissue_beside_it(detector: str) -> None:
    # Both detectors: a band where only haematoxylin is raised (as over crowded nuclei or a lymphoid aggregate)
    # is dense tissue, not a fold; the same band with both stains doubled is one.
    from skimage.color import hed2rgb, rgb2hed

    clean = load(DATA / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif")
    band = np.zeros(clean.shape[:2], bool)
    band[430:530, :] = True
    hed = rgb2hed(clean)
    for gains, is_fold in (((2.2, 1.0), False), ((2.0, 2.0), True)):
        changed = hed.copy()
        changed[band, 0] *= gains[0]
        changed[band, 1] *= gains[1]
        image = np.clip(np.rint(hed2rgb(changed) * 255), 0, 255).astype(np.uint8)
        detection = fold_detector(QcConfig(folds={"detector": detector})).detect(image, tissue_mask(image))
        assert bool(detection.regions) is is_fold, gains
        if is_fold:
            assert (detection.mask & band).sum() > 0.6 * detection.mask.sum()


@pytest.mark.parametrize("path", [
    "glas/glas_train_21.png",  # colon crypts: dense goblet epithelium, flagged over 6.8% of tissue before
    "glas/glas_testB_17.png",  # crypt epithelium at the image edge
    "monuseg2018/TCGA-A6-6782-01A-01-BS1.tif",  # gland at the image edge, flagged over 2.1% before
    "breakhis/SOB_B_F-14-25197-400-033.png",  # dense stromal cell
    "hamamatsu_he/instanseg_HE_example.tif",  # lymphoid tissue around a tumour nest
    "qc_artefacts/focus/fqpath_sample_out_of_focus.png",  # haematoxylin-dense, out of focus
])
def test_dense_normal_tissue_is_not_a_fold(path) -> None:
    image = load_rgb(DATA / path)[:, :, :3]
    detection = FoldDetector().detect(image, tissue_mask(image))
    assert not detection.regions, path


def test_doubled_bands_of_clean_tissue_are_mostly_found() -> None:
    # Synthetic doubled-OD bands on clean MoNuSeg tiles other than the one the check tests use.
    # Not all: a band over pale tissue, or one the candidate step breaks into short pieces, is
    # missed (EVALUATION.md gives the measured rate), so at most one miss.
    names = ("TCGA-A7-A13E-01Z-00-DX1.tif", "TCGA-AR-A1AS-01Z-00-DX1.tif", "TCGA-HE-7129-01Z-00-DX1.tif",
             "TCGA-G9-6362-01Z-00-DX1.tif")
    found = 0
    for seed, name in enumerate(names):
        clean = load(DATA / "monuseg2018" / name)
        folded, band = add_fold(clean, np.random.default_rng(seed))
        assert run_qc(clean, CLASSICAL).check("folds").passed
        detection = FoldDetector().detect(folded, tissue_mask(folded))
        if detection.regions:
            assert (detection.mask & band).sum() > 0.6 * detection.mask.sum()  # found where painted
            found += 1
    assert found >= len(names) - 1


def test_fold_detector_keeps_the_detector_protocol() -> None:
    assert isinstance(FoldDetector(), Detector)
    assert FoldDetector().detect(np.full((64, 64, 3), 255, np.uint8), np.zeros((64, 64), bool)).area_px == 0


def test_synthetic_fold_is_two_layers_of_tissue_and_nothing_else() -> None:
    # The evaluation's fold row is only as honest as its generator: a fold is the section lying
    # on itself, so over tissue the band's optical density roughly doubles (0.8-1.0 x a second
    # layer), and nothing outside the band changes. Guards against a generator drifting fainter
    # (unfair misses) or darker (easy hits).
    from quality.colourspace import optical_density

    clean = load(DATA / "monuseg2018/TCGA-AR-A1AS-01Z-00-DX1.tif")
    for seed in range(3):
        folded, band = add_fold(clean, np.random.default_rng(seed))
        tissue = tissue_mask(clean)
        inside = band & tissue
        assert inside.mean() > 0.02
        ratio = np.median(optical_density(folded).mean(-1)[inside]) / np.median(optical_density(clean).mean(-1)[inside])
        assert 1.6 < ratio < 2.4, (seed, ratio)  # the copy may come from denser tissue
        soft_edge = ndi.binary_dilation(band, iterations=3)
        assert np.array_equal(folded[~soft_edge], clean[~soft_edge])
