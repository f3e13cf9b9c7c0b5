"""The QC agent's domain work on real scans, without servers: judge, build the LR, refuse bad
files with their failure kind, map events with bad identifiers."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from core.settings import Settings, get_settings
from qc.pipeline import PipelineOptions, process_scan
from qc.service import invalid_ids_failure, load_qc_config, pipeline_options
from quality import QcConfig
from quality.lab_standard import LabStandard, read_standard
from quality.standard import SHIPPED, load_standard, save_standard
from scanner.samples import tiff_bomb, truncated_copy, unsupported_file
from schemas.common import QcFailureKind
from schemas.events import SlideScanned
from schemas.registry import EventValidationError, parse_event
from slide_io import Compression, TiledTiff, open_slide

DATA = get_settings().shared_data
SVS = DATA / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs"  # 2220 x 2967, 20x, 0.499 um/px
MONUSEG = DATA / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif"  # 1000 x 1000, 40x by MoNuSeg, not stated
IN_FOCUS = DATA / "qc_artefacts/focus/fqpath_sample_in_focus.png"
OUT_OF_FOCUS = DATA / "qc_artefacts/focus/fqpath_sample_out_of_focus.png"  # same field, real defocus
TEMPLATE = DATA / "qc_artefacts/histoqc/templates/template1.png"

pytestmark = pytest.mark.skipif(not SVS.is_file(), reason="shared data set not available")

SAMPLED = PipelineOptions(lr_magnification=5.0, qc=QcConfig(sampling={"mode": "sampled"}))
# For tests about the HR -> LR path on the vendor slide: the fold detector (quality/, tuned
# separately, see quality/EVALUATION.md) may flag CMU-1's dense epidermis; that is its own
# evaluation's business, not what these tests check.
SAMPLED_NO_FOLDS = PipelineOptions(lr_magnification=5.0, qc=QcConfig(sampling={"mode": "sampled"},
                                                                     folds={"max_area_fraction": 1.0}))


def test_hr_scan_passes_and_its_lr_is_a_readable_pyramid_at_the_target_magnification(tmp_path) -> None:
    verdict = process_scan(SVS, SAMPLED_NO_FOLDS, tmp_path / "lr.tiff")
    assert verdict.passed and verdict.failure is None
    assert verdict.downsample == pytest.approx(4.0) and verdict.hr_candidate
    assert (verdict.width, verdict.height) == (555, 742)
    assert verdict.magnification == 5.0 and verdict.mpp == pytest.approx(0.499 * 4, rel=1e-3)
    names = [check.name.value for check in verdict.checks]
    assert names[0] == "readable" and {"tissue", "blur", "folds", "bubbles"} <= set(names)
    assert all(check.passed for check in verdict.checks)
    with open_slide(tmp_path / "lr.tiff") as lr:
        assert lr.dimensions == (555, 742)
        assert lr.magnification == 5.0
        assert lr.level_count >= 2  # pyramidal
        tile = lr.read_region(0, 0, 0, 256, 256)
        assert tile.shape == (256, 256, 3) and tile.std() > 5  # real image content, not blank
    report = json.loads(verdict.report_json())
    assert report["passed"] and report["lr"]["downsample"] == pytest.approx(4.0)


def test_jpegxl_setting_stores_a_jpegxl_lr_that_our_readers_open(tmp_path) -> None:
    options = dataclasses.replace(pipeline_options(Settings(state_dir=tmp_path, qc={"lr_compression": "jpegxl"})),
                                  qc=SAMPLED_NO_FOLDS.qc)
    assert options.compression is Compression.JPEGXL
    assert process_scan(SVS, options, tmp_path / "lr.tiff").passed
    with TiledTiff(tmp_path / "lr.tiff") as lr:
        assert lr.metadata["compression"] == "jpegxl"
        assert lr.read_tile(0, 0, 0).std() > 5
    with pytest.raises(ValueError):
        Settings(qc={"lr_compression": "webp"})


def test_default_lr_is_avif_at_the_configured_quality_and_our_readers_open_it(tmp_path) -> None:
    default = pipeline_options(Settings(state_dir=tmp_path))
    assert default.compression is Compression.AVIF and default.avif.quality == 70
    options = dataclasses.replace(pipeline_options(Settings(state_dir=tmp_path, qc={"lr_avif_quality": 85})),
                                  qc=SAMPLED_NO_FOLDS.qc)
    assert process_scan(SVS, options, tmp_path / "lr.tiff").passed
    with TiledTiff(tmp_path / "lr.tiff") as lr:
        assert lr.metadata["compression"] == "avif" and lr.metadata["avif_quality"] == 85
        assert lr.read_tile(0, 0, 0).std() > 5
    with pytest.raises(ValueError):
        Settings(qc={"lr_avif_quality": 101})


def test_real_defocus_fails_on_blur_while_the_same_field_in_focus_passes(tmp_path) -> None:
    blurred = process_scan(OUT_OF_FOCUS, SAMPLED, tmp_path / "a.tiff", magnification=40)
    sharp = process_scan(IN_FOCUS, SAMPLED, tmp_path / "b.tiff", magnification=40)
    def blur_check(verdict):
        return next(check for check in verdict.checks if check.name.value == "blur")

    assert blur_check(sharp).passed
    assert not blurred.passed and blurred.failure is QcFailureKind.QUALITY
    assert not blur_check(blurred).passed and "blurred" in blur_check(blurred).reason
    assert "blur: " in blurred.reason  # the verdict names the failing check
    assert not (tmp_path / "a.tiff").exists()  # nothing is built for a slide that will not be stored


def test_scan_at_the_lr_magnification_is_stored_as_is(tmp_path) -> None:
    # A low-magnification scan: the 5x LR of the SVS, a pyramidal TIFF stating 5x.
    assert process_scan(SVS, SAMPLED_NO_FOLDS, tmp_path / "scan_5x.tiff").passed
    verdict = process_scan(tmp_path / "scan_5x.tiff", SAMPLED_NO_FOLDS, tmp_path / "lr.tiff")
    assert verdict.passed and verdict.downsample == 1.0 and not verdict.hr_candidate
    assert (verdict.width, verdict.height, verdict.magnification) == (555, 742, 5.0)


def test_scanner_declared_magnification_is_used_when_the_file_states_none(tmp_path) -> None:
    verdict = process_scan(MONUSEG, SAMPLED, tmp_path / "lr.tiff", magnification=40)
    assert verdict.passed and (verdict.width, verdict.height) == (125, 125) and verdict.downsample == 8.0
    verdict = process_scan(MONUSEG, SAMPLED, tmp_path / "lr2.tiff", mpp=0.25)  # pixel size works too
    assert verdict.passed and verdict.downsample == pytest.approx(8.0)


def test_unknown_magnification_is_refused_with_what_to_do(tmp_path) -> None:
    verdict = process_scan(MONUSEG, SAMPLED, tmp_path / "lr.tiff")
    assert verdict.failure is QcFailureKind.UNSUPPORTED_FORMAT
    assert "--magnification" in verdict.reason


@pytest.mark.parametrize(
    ("make", "kind", "words"),
    [
        (lambda d: truncated_copy(SVS, d / "scan.svs"), QcFailureKind.UNREADABLE, "truncated"),
        (lambda d: truncated_copy(MONUSEG, d / "scan.tif", 0.3), QcFailureKind.UNREADABLE, ""),
        (lambda d: unsupported_file(d / "scan.svs"), QcFailureKind.UNSUPPORTED_FORMAT, "PDF"),
        (lambda d: tiff_bomb(d / "scan.tif"), QcFailureKind.TOO_LARGE, "before decoding"),
    ],
    ids=["truncated-svs", "truncated-tiff", "pdf", "bomb"],
)
def test_bad_files_are_refused_with_their_kind_and_a_reason(tmp_path, make, kind, words) -> None:
    path = make(tmp_path)
    verdict = process_scan(path, SAMPLED, tmp_path / "lr.tiff", magnification=20)
    assert not verdict.passed and verdict.failure is kind
    assert words in verdict.reason and verdict.reason.startswith("scan.")
    assert [(c.name.value, c.passed) for c in verdict.checks] == [("readable", False)]
    assert not (tmp_path / "lr.tiff").exists()


def test_colour_normalisation_toward_the_reference_is_reported(tmp_path) -> None:
    options = PipelineOptions(lr_magnification=10.0, normalise=True,
                              qc=QcConfig(sampling={"mode": "sampled"}, colour={"reference_path": TEMPLATE}))
    verdict = process_scan(MONUSEG, options, tmp_path / "lr.tiff", magnification=40)
    assert verdict.passed and verdict.corrected
    metrics = verdict.normalisation
    assert metrics is not None and metrics["method"] == "reinhard"
    assert metrics["mutual_information_after"] < metrics["mutual_information_before"]
    assert any(check.name.value == "colour_cast" for check in verdict.checks)


def _scanned_json(**changes: object) -> bytes:
    event = SlideScanned(patient_id="P1", exam_id="E1", slide_number=1,
                         ingest={"bucket": "slidestream-ingest", "key": "scans/E1/0001/scan.svs"},
                         original_filename="x.svs", size_bytes=10, sha256="0" * 64,
                         acquired_at=datetime.now(UTC))
    document = json.loads(event.model_dump_json())
    document.update(changes)
    return json.dumps(document).encode()


def _failure_for(raw: bytes):
    with pytest.raises(EventValidationError) as info:
        parse_event("slide.scanned", raw)
    return invalid_ids_failure(raw, info.value.fields, info.value.reason)


def test_event_with_only_bad_ids_becomes_an_invalid_ids_failure_without_echoing_them() -> None:
    failure = _failure_for(_scanned_json(patient_id="SMITH JOHN", slide_number=0))
    assert failure is not None and failure.kind is QcFailureKind.INVALID_IDS
    assert (failure.patient_id, failure.exam_id, failure.slide_number) == (None, "E1", None)
    assert str(failure.ingest) == "slidestream-ingest/scans/E1/0001/scan.svs"
    assert "patient_id" in failure.reason and "slide_number" in failure.reason and "SMITH" not in failure.reason
    raw = _scanned_json()
    missing = json.loads(raw)
    del missing["exam_id"]
    assert _failure_for(json.dumps(missing).encode()).kind is QcFailureKind.INVALID_IDS


@pytest.mark.parametrize(
    "changes",
    [{"patient_id": "bad id", "sha256": "xyz"}, {"patient_id": "bad id", "ingest": {"bucket": "B", "key": "/k"}}],
    ids=["other-field-bad-too", "no-usable-ingest-ref"],
)
def test_events_with_more_wrong_than_ids_are_left_to_the_dead_letter(changes) -> None:
    assert _failure_for(_scanned_json(**changes)) is None


def test_pipeline_options_follow_settings(tmp_path) -> None:
    config = tmp_path / "qc.yaml"
    config.write_text("blur:\n  max_blurred_fraction: 0.5\nsampling:\n  fraction: 0.2\n")
    settings = Settings(lr_magnification=10.0, qc={"mode": "full", "config_file": config,
                                                   "reference_image": TEMPLATE, "lr_compression": "zstd"})
    options = pipeline_options(settings)
    assert options.lr_magnification == 10.0 and options.compression.value == "zstd"
    assert options.qc.sampling.mode == "full" and options.qc.sampling.fraction == 0.2
    assert options.qc.blur.max_blurred_fraction == 0.5
    assert options.qc.colour.reference_path == TEMPLATE
    assert pipeline_options(Settings()).qc.sampling.mode == "sampled"  # the agent's default


def test_pipeline_options_own_the_lab_colour_standard(tmp_path) -> None:
    lab = pipeline_options(Settings(state_dir=tmp_path)).lab_standard
    assert lab is not None and lab.learn and lab.seed_path == SHIPPED
    assert lab.path == tmp_path / "qc" / "lab-colour-standard.json"
    own = tmp_path / "own.json"
    (tmp_path / "qc.json").write_text(json.dumps({"colour": {"standard_path": str(own)}}))
    lab = pipeline_options(Settings(state_dir=tmp_path, qc={"config_file": tmp_path / "qc.json",
                                                            "learn_colour_standard": False})).lab_standard
    assert lab is not None and not lab.learn and lab.seed_path == own  # seeded from the configured standard


def test_a_passed_slide_teaches_the_lab_standard_and_a_failed_one_does_not(tmp_path) -> None:
    lab = LabStandard(tmp_path / "lab.json")
    options = dataclasses.replace(SAMPLED, lab_standard=lab)
    assert not process_scan(OUT_OF_FOCUS, options, tmp_path / "a.tiff", magnification=40).passed
    assert not lab.path.exists()
    verdict = process_scan(MONUSEG, options, tmp_path / "lr.tiff", magnification=40)
    assert verdict.passed and verdict.report is not None
    assert "'lab (from he_default)'" in verdict.report.check("colour_cast").reason  # judged against the lab's
    seed, descriptor = load_standard(SHIPPED), verdict.report.colour_descriptor
    assert descriptor is not None
    _, learned = read_standard(lab.path)
    assert learned.count == seed.count + 1
    assert np.allclose(learned.mean, seed.mean + (descriptor - seed.mean) / (seed.count + 1))


def test_slides_are_judged_against_the_lab_standard_as_it_stands(tmp_path) -> None:
    seed = load_standard(SHIPPED)
    save_standard(dataclasses.replace(seed, mean=seed.mean + 25.0, name="drifted"), tmp_path / "lab.json")
    written = (tmp_path / "lab.json").read_bytes()
    options = dataclasses.replace(SAMPLED, lab_standard=LabStandard(tmp_path / "lab.json"))
    verdict = process_scan(MONUSEG, options, tmp_path / "lr.tiff", magnification=40)
    assert not verdict.passed and "colour_cast" in verdict.reason and "'drifted'" in verdict.reason
    assert (tmp_path / "lab.json").read_bytes() == written  # a failed slide teaches nothing


def test_qc_config_file_with_a_typo_is_refused(tmp_path) -> None:
    config = tmp_path / "qc.json"
    config.write_text(json.dumps({"blur": {"max_blured_fraction": 0.5}}))
    with pytest.raises(ValueError, match="max_blured_fraction"):
        load_qc_config(config)


def test_report_json_is_strict_json_even_with_undefined_metrics() -> None:
    from qc.pipeline import ScanVerdict

    verdict = ScanVerdict(True, "passed", normalisation={"delta_e_after": float("nan"), "x": [float("inf"), 1.0]})
    document = json.loads(verdict.report_json())
    assert document["lr"]["normalisation"] == {"delta_e_after": None, "x": [None, 1.0]}


def test_a_dead_lettered_scan_event_is_attributed_to_its_slide() -> None:
    from core.dead_letters import dead_letter
    from scanner.verdicts import slide_of

    raw = _scanned_json(patient_id="bad id")
    letter = dead_letter(raw, source_topic="slide.scanned", partition=0, offset=3, error="patient_id: bad")
    assert slide_of(letter) == ("E1", 1)  # read from the redacted copy, which keeps exam and slide
    assert b"bad id" not in letter.to_json_bytes()
    garbage = dead_letter(b"\xff\x00", source_topic="slide.scanned", partition=0, offset=4, error="not JSON")
    assert slide_of(garbage) == (None, None)
