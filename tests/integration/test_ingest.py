"""The scanner side on the real broker and object store: ``slidestream ingest`` and the watch
folder upload the original unchanged and publish ``slide.scanned``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.kafka import tail_from_end, wait_for
from core.settings import Settings
from scanner.ingest import open_ingestor
from scanner.watch import REASON_SUFFIX, ScanRequest, WatchFolder
from schemas.events import SlideScanned
from schemas.topics import Topic
from storage.ingest_bucket import IngestBucket

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def svs(stack: Settings) -> Path:
    path = stack.shared_data / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs"
    if not path.is_file():
        pytest.skip("shared data set not available")
    return path


def _exam() -> str:
    return f"IT-{uuid.uuid4().hex[:12]}"


def _scanned_for(exam: str):
    def match(raw: bytes) -> SlideScanned | None:
        event = SlideScanned.model_validate_json(raw)
        return event if event.exam_id == exam else None

    return match


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slidestream", *args], capture_output=True, text=True,
                          timeout=120, env=os.environ.copy())


async def _object_sha(settings: Settings, event: SlideScanned, tmp_path: Path) -> str:
    sha256, _ = await IngestBucket(settings.storage).download(event.ingest, tmp_path / "copy")
    return sha256


async def test_ingest_command_uploads_the_original_and_publishes_slide_scanned(stack, svs, tmp_path) -> None:
    exam = _exam()
    async with tail_from_end(stack, Topic.SLIDE_SCANNED.value) as scans:
        result = await asyncio.to_thread(_cli, "ingest", str(svs), "--patient", "P-IT-9", "--exam", exam,
                                         "--slide", "2", "--scanner", "aperio-it", "--body-part", "colon")
        assert result.returncode == 0, result.stderr
        event = await wait_for(scans, _scanned_for(exam), timeout=TIMEOUT_S)
    expected = hashlib.sha256(svs.read_bytes()).hexdigest()
    assert (event.patient_id, event.slide_number, event.scanner_id, event.body_part) == ("P-IT-9", 2, "aperio-it", "colon")
    assert (event.sha256, event.size_bytes) == (expected, svs.stat().st_size)
    assert event.ingest.key == f"scans/{exam}/0002/scan.svs"
    assert event.original_filename == svs.name
    assert event.magnification == 20.0 and event.mpp == pytest.approx(0.499)  # read from the SVS
    assert await _object_sha(stack, event, tmp_path) == expected
    assert "P-IT-9" not in result.stdout  # output names exam and slide only
    assert exam in result.stdout


def test_ingest_command_refuses_malformed_ids_before_uploading(stack, svs) -> None:
    result = _cli("ingest", str(svs), "--patient", "bad id", "--exam", "E1", "--slide", "0")
    assert result.returncode == 2
    assert "patient_id: malformed" in result.stderr and "slide_number: malformed" in result.stderr


def test_ingest_command_refuses_an_empty_file(stack, tmp_path) -> None:
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    result = _cli("ingest", str(empty), "--patient", "P1", "--exam", _exam(), "--slide", "1")
    assert result.returncode == 1 and "file is empty" in result.stderr


async def test_watch_folder_ingests_once_and_rejects_bad_sidecars(stack, svs, tmp_path) -> None:
    exam = _exam()
    (tmp_path / "slide.svs").write_bytes(svs.read_bytes())
    (tmp_path / "slide.svs.json").write_text(json.dumps({"patient_id": "P-IT-8", "exam_id": exam, "slide_number": 3}))
    (tmp_path / "other.svs").write_bytes(b"x")
    (tmp_path / "other.svs.json").write_text(json.dumps({"patient_id": "P-IT-8", "exam": exam, "slide_number": 4}))
    async with tail_from_end(stack, Topic.SLIDE_SCANNED.value) as scans, open_ingestor(stack) as ingestor:
        async def ingest(request: ScanRequest) -> None:
            await ingestor.ingest(request.path, request.ids, magnification=request.magnification)

        folder = WatchFolder(tmp_path, ingest, settle_s=0.2)
        outcomes = []
        for _ in range(50):
            outcomes += await folder.poll()
            if len(outcomes) >= 2:
                break
            await asyncio.sleep(0.1)
        event = await wait_for(scans, _scanned_for(exam), timeout=TIMEOUT_S)
    assert sorted((o.name, o.status) for o in outcomes) == [("other.svs", "rejected"), ("slide.svs", "ingested")]
    assert event.slide_number == 3 and event.original_filename == "slide.svs"
    assert (tmp_path / "done" / "slide.svs").is_file() and not (tmp_path / "slide.svs").exists()
    assert "unknown key(s) exam" in (tmp_path / "rejected" / ("other.svs" + REASON_SUFFIX)).read_text()


async def test_watch_command_runs_until_stopped(stack, svs, tmp_path) -> None:
    exam = _exam()
    async with tail_from_end(stack, Topic.SLIDE_SCANNED.value) as scans:
        watcher = subprocess.Popen([sys.executable, "-m", "slidestream", "watch", str(tmp_path), "--settle", "0.3",
                                    "--interval", "0.2", "--magnification", "40"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        try:
            partial = tmp_path / f"P-IT-7+{exam}+5.tif.part"
            partial.write_bytes((stack.shared_data / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif").read_bytes())
            partial.rename(tmp_path / f"P-IT-7+{exam}+5.tif")  # the scanner's final rename
            event = await wait_for(scans, _scanned_for(exam), timeout=TIMEOUT_S)
        finally:
            watcher.send_signal(signal.SIGTERM)
            out, err = await asyncio.to_thread(watcher.communicate, timeout=60)
    assert watcher.returncode == 0, err
    assert (event.patient_id, event.slide_number, event.magnification) == ("P-IT-7", 5, 40.0)
    assert f"ingested: exam {exam} slide 5" in out and "P-IT-7" not in out
    assert (tmp_path / "done" / f"P-IT-7+{exam}+5.tif").is_file()


async def test_a_scan_stating_no_resolution_needs_the_scanners_magnification(stack, tmp_path) -> None:
    """A real Aperio file (old Aperio Image Library, no AppMag or MPP) used to be uploaded and
    then refused by QC with the reason only on Kafka; now the operator is told the flag."""
    scan = stack.shared_data / "wsi_formats/aperio_svs/tcga-cr-7395-01a-01-ts1.svs"
    if not scan.is_file():
        pytest.skip("shared data set not available")
    exam = _exam()
    refused = await asyncio.to_thread(_cli, "ingest", str(scan), "--patient", "P-IT-9", "--exam", exam, "--slide", "1")
    assert refused.returncode == 2 and "--magnification" in refused.stderr, refused.stderr
    bucket = IngestBucket(stack.storage)
    assert not await bucket.exists(bucket.ref(f"scans/{exam}/0001/scan.svs"))  # nothing uploaded
    async with tail_from_end(stack, Topic.SLIDE_SCANNED.value) as scans:
        given = await asyncio.to_thread(_cli, "ingest", str(scan), "--patient", "P-IT-9", "--exam", exam,
                                        "--slide", "1", "--magnification", "20")
        assert given.returncode == 0, given.stderr
        assert (await wait_for(scans, _scanned_for(exam), timeout=TIMEOUT_S)).magnification == 20.0
