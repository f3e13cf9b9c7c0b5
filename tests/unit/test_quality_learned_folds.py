"""The learned fold detector (quality/learned_folds.py): it finds a doubled band on a source its
weights never saw and leaves the clean image alone, keeps the ``Detector`` protocol, gives a
verdict on bad input, and refuses weights whose checksum does not match."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from core.settings import get_settings
from model_zoo.registry import WeightsChecksumError, WeightsError
from quality import QcConfig, run_qc
from quality.artefacts import Detector
from quality.datasets import load_rgb
from quality.folds import FoldDetector
from quality.learned_folds import MODELS_DIR, WEIGHTS, LearnedFoldDetector
from quality.qc import fold_detector
from quality.synthetic import add_fold
from quality.tissue import tissue_mask

DATA = get_settings().shared_data
LEARNED = QcConfig(folds={"detector": "learned"})
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@needs_data
@pytest.mark.parametrize("path", ["prostate_gleason/gleasongrade_test10.jpg", "breast_veta/veta_example1.tif"])
def test_fold_on_a_source_the_weights_never_saw_is_found_and_the_clean_image_passes(path) -> None:
    # half1 weights were trained on FOLDS[0] only; these images are from FOLDS[1]. The seed is
    # not one the training (default_rng([1000 + seed, index])) or the evaluation (7) draws.
    detector = LearnedFoldDetector(weights="half1")
    clean = load_rgb(DATA / path)[:, :, :3]
    assert not detector.detect(clean, tissue_mask(clean)).regions
    folded, band = add_fold(clean, np.random.default_rng(12345))
    detection = detector.detect(folded, tissue_mask(folded))
    assert detection.regions
    assert (detection.mask & band).sum() > 0.6 * detection.mask.sum()  # on the painted band


@needs_data
def test_real_fold_is_flagged_and_dense_keratin_passes_with_the_learned_detector() -> None:
    fold = load_rgb(DATA / "qc_artefacts/histolab/high-nuclei-score-red-pen-level1.png")[:, :, :3]
    assert not run_qc(fold, LEARNED).check("folds").passed
    folds = run_qc(DATA / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs", LEARNED).check("folds")
    assert folds.judged and folds.passed


def test_learned_detector_keeps_the_protocol_and_the_config_switch() -> None:
    assert isinstance(LearnedFoldDetector(), Detector)
    assert isinstance(fold_detector(LEARNED), LearnedFoldDetector)
    assert isinstance(fold_detector(QcConfig(folds={"detector": "classical"})), FoldDetector)


@pytest.mark.parametrize("image", [
    np.full((300, 300), 128, np.uint8),  # greyscale
    np.full((300, 300, 4), 200, np.uint8),  # alpha
    np.full((300, 300, 3), 40000, np.uint16),  # 16-bit
    np.full((7, 5, 3), 120, np.uint8),  # smaller than one output cell
    np.full((300, 300, 3), 255, np.uint8),  # glass
])
def test_bad_input_gives_a_detection_not_a_crash(image) -> None:
    tissue = np.ones(image.shape[:2], bool) if image.dtype != np.uint8 or image.max() < 255 else np.zeros(image.shape[:2], bool)
    detection = LearnedFoldDetector().detect(image, tissue)
    assert detection.mask.shape == image.shape[:2] and not detection.regions


@pytest.mark.parametrize("image", [
    np.full((300, 300), 128, np.uint8),
    np.dstack([np.full((300, 300, 3), 150, np.uint8), np.full((300, 300), 255, np.uint8)]),
    np.full((20, 20, 3), 120, np.uint8),
])
def test_bad_input_gets_a_verdict_from_qc_with_the_learned_detector(image) -> None:
    report = run_qc(image, LEARNED)
    assert report.check("folds") is not None and report.summary()


def test_mismatched_mask_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="does not match"):
        LearnedFoldDetector().detect(np.zeros((64, 64, 3), np.uint8), np.ones((32, 32), bool))


def test_weights_with_the_wrong_checksum_are_refused(tmp_path) -> None:
    file, _ = WEIGHTS["all"]
    shutil.copy(MODELS_DIR / file, tmp_path / file)
    data = bytearray((tmp_path / file).read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / file).write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match="sha256"):
        LearnedFoldDetector(models_dir=tmp_path)
    (tmp_path / file).unlink()
    with pytest.raises(WeightsError, match="missing"):
        LearnedFoldDetector(models_dir=tmp_path)
    with pytest.raises(KeyError, match="registered"):
        LearnedFoldDetector(weights="no-such-weights")


def test_training_crops_keep_inputs_and_targets_aligned() -> None:
    from quality.fold_data import Sample
    from quality.train_folds import CROP, augment

    inputs = np.zeros((8, 60, 80), np.float16)
    inputs[0, 20:30, :] = 2.0  # a horizontal band in the first channel ...
    target = np.zeros((30, 40), np.uint8)
    target[10:15, :] = 1  # ... and its target cells
    sample = Sample("s", "n", inputs, target, np.ones_like(target))
    rng = np.random.default_rng(0)
    for _ in range(10):
        x, t, w = augment(sample, rng)
        assert x.shape == (8, CROP, CROP) and t.shape == w.shape == (CROP // 2, CROP // 2)
        band = x[0].reshape(CROP // 2, 2, CROP // 2, 2).mean(axis=(1, 3)) > 0.5
        assert t.any() and (band & (t > 0)).sum() >= 0.8 * t.sum()
