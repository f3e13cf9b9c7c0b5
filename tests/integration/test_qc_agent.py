"""The QC agent in a real worker process on the real broker and object store: good slides pass
with a readable LR in the ingest bucket, bad ones fail with their reason, bad events are
dead-lettered, the worker keeps serving and the scan stays in the ingest bucket."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.kafka import producer, send_event, tail_from_end, wait_for
from core.logging import keyed_digest, log_salt
from core.settings import Settings
from scanner.ids import validate_ids
from scanner.ingest import open_ingestor
from scanner.samples import tiff_bomb, truncated_copy, unsupported_file
from scanner.verdicts import listen_for_verdicts
from schemas.common import QcFailureKind
from schemas.events import DeadLetter, SlideQcFailed, SlideQcPassed, SlideScanned
from schemas.topics import Topic
from slide_io import TiledTiff, open_slide
from slidestream.probe import probe_agents
from storage.ingest_bucket import IngestBucket

pytestmark = pytest.mark.integration

VERDICT_TIMEOUT_S = 180.0


def _exam() -> str:
    # Unique per test: the catalog (save agent) keeps one LR per exam and slide.
    return f"IT-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def data(agent_worker: Settings) -> Path:
    path = agent_worker.shared_data
    if not (path / "wsi_formats").is_dir():
        pytest.skip("shared data set not available")
    return path


async def _ingest_and_judge(settings: Settings, path: Path, *, magnification: float | None = None):
    exam = _exam()
    ids = validate_ids("P-IT-1", exam, 1, scanner_id="it-scanner")
    async with listen_for_verdicts(settings) as listener, open_ingestor(settings) as ingestor:
        scanned = await ingestor.ingest(path, ids, magnification=magnification)
        verdict = await listener.for_slide(exam, 1, VERDICT_TIMEOUT_S)
    return scanned, verdict


async def _still_in_ingest(settings: Settings, scanned: SlideScanned, tmp_path: Path) -> None:
    bucket = IngestBucket(settings.storage)
    sha256, size = await bucket.download(scanned.ingest, tmp_path / "kept")
    assert (sha256, size) == (scanned.sha256, scanned.size_bytes)


async def _released_from_ingest(settings: Settings, verdict: SlideQcPassed, timeout_s: float = 120.0) -> None:
    """Wait until the save (and, for a kept HR scan, the cut) took the slide's upload and LR
    out of the ingest bucket."""
    from storage.objects import ObjectStore

    store = ObjectStore(settings.storage)
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await store.exists(verdict.lr) or (verdict.scan is not None and await store.exists(verdict.scan)):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"ingest objects of exam {verdict.exam_id} still there after {timeout_s:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        store.close()


async def test_hr_scan_passes_with_a_readable_lr_tiff_saved_and_leaves_the_ingest_bucket(agent_worker, data,
                                                                                       tmp_path) -> None:
    # A 40x H&E tile (MoNuSeg states its magnification; the file does not, the scanner does).
    scanned, verdict = await _ingest_and_judge(agent_worker, data / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif",
                                               magnification=40)
    assert isinstance(verdict, SlideQcPassed), verdict
    assert (verdict.patient_id, verdict.exam_id) == (scanned.patient_id, scanned.exam_id)
    assert verdict.magnification == agent_worker.lr_magnification == 5.0
    assert (verdict.width, verdict.height) == (125, 125)  # 1000 x 1000 at 40x -> 5x
    assert verdict.mpp == pytest.approx(2.0)
    assert verdict.hr_candidate == scanned.ingest == verdict.scan  # the 40x original is the hr-cache candidate
    assert verdict.lr.bucket == agent_worker.storage.ingest.bucket
    assert verdict.acquired_at == scanned.acquired_at
    assert {c.name.value for c in verdict.checks} >= {"readable", "tissue", "blur", "folds", "bubbles"}
    assert all(c.passed for c in verdict.checks)

    # The save agent stores QC's LR in the recent tier; once the HR-scan agent has cut the
    # scan too, both leave the ingest bucket (the QC report stays until its expiry rule).
    from schemas.common import StorageTier
    from schemas.layout import lr_key

    await _released_from_ingest(agent_worker, verdict)
    bucket = IngestBucket(agent_worker.storage)
    saved = bucket.store.ref(StorageTier.RECENT, lr_key(scanned.exam_id, 1))
    fd = os.open(tmp_path / "lr.tiff", os.O_WRONLY | os.O_CREAT, 0o600)
    sha256, size = await bucket.store.download_to_fd(saved, fd)
    assert (sha256, size) == (verdict.sha256, verdict.size_bytes)
    with open_slide(tmp_path / "lr.tiff") as lr:
        assert lr.dimensions == (125, 125) and lr.magnification == 5.0
        assert lr.read_region(0, 0, 0, 125, 125).std() > 5  # real tissue pixels
    # A tile straight from the object store with ranged GETs.
    with TiledTiff(bucket.store.range_reader(saved)) as remote:
        assert remote.read_tile(0, 0, 0).shape == (125, 125, 3)
    report = json.loads(await bucket.store.get_bytes(bucket.ref(f"qc/{scanned.exam_id}/0001/report.json")))
    assert report["passed"] and report["qc"]["checks"]


async def test_vendor_wsi_is_judged_and_a_pass_gets_its_lr_at_the_target_magnification(agent_worker, data) -> None:
    # The verdict on CMU-1 belongs to quality/ (its fold detector may flag the dense epidermis);
    # what the agent must do either way: judge the 20x SVS, and on a pass store a 5x LR.
    scanned, verdict = await _ingest_and_judge(agent_worker, data / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs")
    assert scanned.magnification == 20.0  # read from the SVS by the scanner side
    if isinstance(verdict, SlideQcPassed):
        assert (verdict.width, verdict.height, verdict.hr_candidate) == (555, 742, scanned.ingest)
    else:
        assert isinstance(verdict, SlideQcFailed), verdict
        assert verdict.kind is QcFailureKind.QUALITY and verdict.checks[0].passed  # readable


async def test_real_out_of_focus_scan_fails_naming_blur(agent_worker, data, tmp_path) -> None:
    scanned, verdict = await _ingest_and_judge(
        agent_worker, data / "qc_artefacts/focus/fqpath_sample_out_of_focus.png", magnification=40)
    assert isinstance(verdict, SlideQcFailed), verdict
    assert verdict.kind is QcFailureKind.QUALITY
    assert "blur" in [c.name.value for c in verdict.checks if not c.passed]
    assert "blur" in verdict.reason and "report: " in verdict.reason
    assert verdict.ingest == scanned.ingest
    await _still_in_ingest(agent_worker, scanned, tmp_path)


@pytest.mark.parametrize(
    ("make", "kind", "words"),
    [
        (lambda data, d: truncated_copy(data / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs", d / "cut.svs"),
         QcFailureKind.UNREADABLE, "truncated"),
        (lambda data, d: unsupported_file(d / "report.svs"), QcFailureKind.UNSUPPORTED_FORMAT, "PDF"),
        (lambda data, d: tiff_bomb(d / "bomb.tif"), QcFailureKind.TOO_LARGE, "refused before decoding"),
    ],
    ids=["truncated", "unsupported", "bomb"],
)
async def test_bad_file_fails_with_its_reason_and_stays_in_ingest(agent_worker, data, tmp_path, make, kind,
                                                                  words) -> None:
    scanned, verdict = await _ingest_and_judge(agent_worker, make(data, tmp_path), magnification=20)
    assert isinstance(verdict, SlideQcFailed), verdict
    assert verdict.kind is kind and words in verdict.reason
    assert [(c.name.value, c.passed) for c in verdict.checks] == [("readable", False)]
    await _still_in_ingest(agent_worker, scanned, tmp_path)


async def test_missing_ingest_object_fails_as_missing(agent_worker) -> None:
    exam = _exam()
    scanned = SlideScanned(
        patient_id="P-IT-2", exam_id=exam, slide_number=1,
        ingest={"bucket": agent_worker.storage.ingest.bucket, "key": f"scans/{exam}/0001/scan.svs"},
        original_filename="gone.svs", size_bytes=1234, sha256="ab" * 32, acquired_at=datetime.now(UTC))
    async with listen_for_verdicts(agent_worker) as listener, producer(agent_worker) as prod:
        await send_event(prod, Topic.SLIDE_SCANNED.value, scanned, key=exam)
        verdict = await listener.for_slide(exam, 1, VERDICT_TIMEOUT_S)
    assert isinstance(verdict, SlideQcFailed) and verdict.kind is QcFailureKind.MISSING_OBJECT
    assert "not in the ingest bucket" in verdict.reason


async def _dead_letter_for(settings: Settings, payload: bytes, key: bytes) -> DeadLetter:
    digest = keyed_digest(payload, log_salt(settings))  # the letter keeps a digest, never the bytes

    def match(raw: bytes) -> DeadLetter | None:
        letter = DeadLetter.model_validate_json(raw)
        return letter if letter.source_topic == Topic.SLIDE_SCANNED.value and letter.payload_digest == digest else None

    async with tail_from_end(settings, Topic.DEAD_LETTER.value) as letters, producer(settings) as prod:
        await prod.send_and_wait(Topic.SLIDE_SCANNED.value, payload, key=key)
        return await wait_for(letters, match, timeout=VERDICT_TIMEOUT_S)


async def test_malformed_events_are_dead_lettered_and_the_worker_keeps_serving(agent_worker, data) -> None:
    for payload in (b"\x00\xffnot json", b'{"event_type": "slide.scanned", "exam_id": 7}'):
        letter = await _dead_letter_for(agent_worker, payload, key=b"bad")
        assert letter.error and "slide.scanned" in letter.error
    assert (await probe_agents(agent_worker, timeout=60)).worker
    _, verdict = await _ingest_and_judge(agent_worker, data / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif",
                                         magnification=40)
    assert isinstance(verdict, SlideQcPassed)  # the next good slide is still judged


async def test_event_with_malformed_ids_is_dead_lettered_and_reported_as_invalid_ids(agent_worker) -> None:
    exam = _exam()
    ingest = {"bucket": agent_worker.storage.ingest.bucket, "key": f"scans/{exam}/0001/scan.svs"}
    good = SlideScanned(patient_id="P-IT-3", exam_id=exam, slide_number=1, ingest=ingest,
                        original_filename="x.svs", size_bytes=10, sha256="cd" * 32,
                        acquired_at=datetime.now(UTC))
    document = json.loads(good.model_dump_json())
    document["patient_id"] = "../../etc/passwd"
    payload = json.dumps(document).encode()
    async with listen_for_verdicts(agent_worker) as listener:
        letter = await _dead_letter_for(agent_worker, payload, key=exam.encode())
        verdict = await listener.wait(lambda v: isinstance(v, SlideQcFailed) and v.ingest.key == ingest["key"],
                                      VERDICT_TIMEOUT_S)
    assert "patient_id" in letter.error
    assert verdict.kind is QcFailureKind.INVALID_IDS
    assert (verdict.patient_id, verdict.exam_id, verdict.slide_number) == (None, exam, 1)
    assert "passwd" not in verdict.reason  # the bad value is not echoed


def _ingest_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slidestream", "ingest", *args], capture_output=True, text=True,
                          timeout=VERDICT_TIMEOUT_S + 60, env=os.environ.copy())


async def test_ingest_wait_prints_the_verdict_and_the_save(agent_worker, data) -> None:
    """`slidestream ingest --wait` tells the operator what became of the slide, not just
    that it was uploaded: QC's verdict with its reason, then where it was stored."""
    exam = _exam()
    good = await asyncio.to_thread(_ingest_cli, str(data / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif"),
                                   "--patient", "P-WAIT-1", "--exam", exam, "--slide", "1", "--magnification", "40",
                                   "--wait", str(VERDICT_TIMEOUT_S))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "QC passed: LR" in good.stdout and f"stored: slidestream-recent/lr/{exam}/0001.tiff" in good.stdout
    blurred = await asyncio.to_thread(_ingest_cli, str(data / "qc_artefacts/focus/fqpath_sample_out_of_focus.png"),
                                      "--patient", "P-WAIT-1", "--exam", exam, "--slide", "2", "--magnification",
                                      "40", "--wait", str(VERDICT_TIMEOUT_S))
    assert blurred.returncode == 1, blurred.stdout + blurred.stderr
    assert "QC failed (quality):" in blurred.stdout and "blur" in blurred.stdout and "stored" not in blurred.stdout
    assert "P-WAIT-1" not in good.stdout + blurred.stdout


async def test_a_kept_40x_scan_becomes_scanned_hr_tiles(agent_worker, data) -> None:
    """The HR-scan agent cuts the kept scan into the slide's x8 pyramid in the hr-cache: the
    40x level is the scan's own pixels, and the provenance marker says scanned."""
    import io

    import numpy as np
    from PIL import Image

    from schemas.common import StorageTier
    from schemas.layout import hr_provenance_key, hr_tile_key
    from storage.objects import ObjectStore

    path = data / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif"
    scanned, verdict = await _ingest_and_judge(agent_worker, path, magnification=40)
    assert isinstance(verdict, SlideQcPassed) and verdict.hr_candidate is not None
    store = ObjectStore(agent_worker.storage)
    marker = store.ref(StorageTier.TEMPORARY, hr_provenance_key(verdict.exam_id, verdict.slide_number, 8))
    deadline = asyncio.get_running_loop().time() + 120
    status = None
    while status != "complete":
        if asyncio.get_running_loop().time() > deadline:
            from infra import process
            from slidestream.workers import worker_status

            logs = "\n".join(process.tail(info.log, 40) for info in worker_status(agent_worker))
            pytest.fail(f"marker status {status} after 120 s; worker log:\n{logs}")
        await asyncio.sleep(0.5)
        if await store.exists(marker):
            status = json.loads(await store.get_bytes(marker))["status"]
    provenance = json.loads(await store.get_bytes(marker))
    assert provenance["tiles"] == 16 + 4 + 1  # 1000 px at 40x: 4x4 tiles, 500: 2x2, 250: 1
    assert provenance["scan"].endswith(verdict.hr_candidate.key)
    tile = await store.get_bytes(store.ref(StorageTier.TEMPORARY, hr_tile_key(verdict.exam_id, 1, 8, 10, 1, 2)))
    with open_slide(path) as scan:
        original = scan.read_region(0, 256, 512, 256, 256)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(tile)).convert("RGB")), original)
    store.close()


async def test_a_saved_and_cut_slide_leaves_the_ingest_bucket_and_redeliveries_change_nothing(agent_worker,
                                                                                            data) -> None:
    """Through the real agents: after the save and the HR cut, nothing of the slide but its QC
    report is left in the ingest bucket; the same slide.scanned and slide.qc_passed delivered
    again are recognised (the save re-publishes the same slide.stored), with no refusal, no
    dead letter and no second catalog row."""
    from schemas.events import SlideStored
    from schemas.layout import LR_STAGING_PREFIX, SCANS_PREFIX
    from storage.runtime import open_services
    from storage.save import stored_event_id

    scanned, verdict = await _ingest_and_judge(agent_worker, data / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif",
                                               magnification=40)
    assert isinstance(verdict, SlideQcPassed) and verdict.hr_candidate is not None
    await _released_from_ingest(agent_worker, verdict)
    exam = verdict.exam_id

    async def sent_back() -> None:
        async with producer(agent_worker) as prod:
            await send_event(prod, Topic.SLIDE_SCANNED.value, scanned, key=scanned.kafka_key())
            await send_event(prod, Topic.SLIDE_QC_PASSED.value, verdict, key=verdict.kafka_key())

    def stored_again(raw: bytes) -> SlideStored | None:
        event = SlideStored.model_validate_json(raw)
        return event if event.event_id == stored_event_id(exam, 1, verdict.sha256) else None

    def complaint(raw: bytes) -> object | None:
        document = json.loads(raw)
        if document.get("event_type") == "slide.qc_failed":
            return document if document.get("exam_id") == exam else None
        if document.get("source_topic") in (Topic.SLIDE_SCANNED.value, Topic.SLIDE_QC_PASSED.value):
            return document
        return None

    async with tail_from_end(agent_worker, Topic.SLIDE_STORED.value) as stored, \
            tail_from_end(agent_worker, Topic.SLIDE_QC_FAILED.value, Topic.DEAD_LETTER.value) as complaints:
        await sent_back()
        await wait_for(stored, stored_again, timeout=VERDICT_TIMEOUT_S)
        with pytest.raises(TimeoutError):
            found = await wait_for(complaints, complaint, timeout=15)
            pytest.fail(f"a redelivery was refused: {found}")

    async with producer(agent_worker) as prod:
        from core.kafka import KafkaSink

        svc = await open_services(agent_worker, KafkaSink(prod), indexes=False)
        try:
            assert await svc.catalog.images.count_documents({"exam_id": exam, "state": 0}) == 1
            bucket = svc.store.bucket("ingest")
            for prefix in (SCANS_PREFIX, LR_STAGING_PREFIX):
                assert await svc.store.list_prefix(bucket, f"{prefix}{exam}/") == []
            report = json.loads(await svc.store.get_bytes(svc.store.ref("ingest", f"qc/{exam}/0001/report.json")))
            assert report["passed"]  # QC's verdict still readable, not overwritten by the repeat
        finally:
            await svc.close()
