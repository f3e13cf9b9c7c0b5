"""Watch-folder logic without servers: stability, sidecars, the name convention, done/rejected,
and retry after an outage. Time is a counter the test advances, so nothing sleeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scanner.ingest import IngestError
from scanner.watch import (
    REASON_SUFFIX,
    ScanRequest,
    StabilityTracker,
    WatchFolder,
    is_candidate,
    unique_destination,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """The ingest step the watch folder calls; records requests, can be told to fail."""

    def __init__(self) -> None:
        self.requests: list[ScanRequest] = []
        self.fail_with: Exception | None = None

    async def __call__(self, request: ScanRequest) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        assert request.path.is_file()  # ingest sees the file in place, before it is moved
        self.requests.append(request)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def folder(tmp_path: Path, clock: Clock, recorder: Recorder) -> WatchFolder:
    return WatchFolder(tmp_path, recorder, settle_s=2.0, sidecar_wait_s=10.0, clock=clock, scanner_id="scan-A")


async def settle(folder: WatchFolder, clock: Clock, seconds: float = 3.0):
    """Poll, let ``seconds`` pass, poll again: a file unchanged in between is stable."""
    first = await folder.poll()
    clock.now += seconds
    return first + await folder.poll()


def write_sidecar(scan: Path, **document) -> None:
    scan.with_name(scan.name + ".json").write_text(json.dumps(document))


async def test_scan_with_sidecar_is_ingested_once_and_moved_to_done(folder, clock, recorder, tmp_path) -> None:
    scan = tmp_path / "slide.svs"
    scan.write_bytes(b"pixels")
    write_sidecar(scan, patient_id="P1", exam_id="E1", slide_number=2, body_part="skin", magnification=20)
    outcomes = await settle(folder, clock)
    assert [(o.name, o.status) for o in outcomes] == [("slide.svs", "ingested")]
    [request] = recorder.requests
    assert (request.ids.patient_id, request.ids.exam_id, request.ids.slide_number) == ("P1", "E1", 2)
    assert (request.ids.scanner_id, request.ids.body_part, request.magnification) == ("scan-A", "skin", 20.0)
    assert (tmp_path / "done" / "slide.svs").read_bytes() == b"pixels"
    assert (tmp_path / "done" / "slide.svs.json").is_file()
    assert not scan.exists()
    clock.now += 10
    assert await settle(folder, clock) == []
    assert len(recorder.requests) == 1


async def test_growing_file_is_not_taken_until_it_stops_changing(folder, clock, recorder, tmp_path) -> None:
    scan = tmp_path / "P1+E1+1.svs"
    scan.write_bytes(b"a")
    for _ in range(3):
        assert await folder.poll() == []
        clock.now += 5
        with scan.open("ab") as handle:  # the scanner is still writing
            handle.write(b"more")
    assert recorder.requests == []
    outcomes = await settle(folder, clock)
    assert [o.status for o in outcomes] == ["ingested"]
    assert (tmp_path / "done" / "P1+E1+1.svs").read_bytes() == b"amoremoremore"


async def test_sidecar_still_being_written_delays_ingest(folder, clock, recorder, tmp_path) -> None:
    scan = tmp_path / "x.tif"
    scan.write_bytes(b"data")
    await settle(folder, clock)  # scan stable; no sidecar yet, still inside the sidecar wait
    assert recorder.requests == []
    write_sidecar(scan, patient_id="P9", exam_id="E9", slide_number=1)
    assert await folder.poll() == []  # sidecar just appeared: not yet stable
    clock.now += 3
    assert [o.status for o in await folder.poll()] == ["ingested"]
    assert recorder.requests[0].ids.patient_id == "P9"


async def test_file_name_convention(folder, clock, recorder, tmp_path) -> None:
    (tmp_path / "P-77+EX.2024_1+12.ome.tiff").write_bytes(b"x")
    await settle(folder, clock)
    [request] = recorder.requests
    assert (request.ids.patient_id, request.ids.exam_id, request.ids.slide_number) == ("P-77", "EX.2024_1", 12)
    assert request.ids.scanner_id == "scan-A"


async def test_sidecar_wins_over_the_file_name(folder, clock, recorder, tmp_path) -> None:
    scan = tmp_path / "P1+E1+1.svs"
    scan.write_bytes(b"x")
    write_sidecar(scan, patient_id="P2", exam_id="E2", slide_number=5, scanner_id="other")
    await settle(folder, clock)
    ids = recorder.requests[0].ids
    assert (ids.patient_id, ids.exam_id, ids.slide_number, ids.scanner_id) == ("P2", "E2", 5, "other")


@pytest.mark.parametrize(
    ("sidecar", "reason"),
    [
        ('{"patient_id": "P1", "exam_id": "E 1", "slide_number": 1}', "exam_id: malformed"),
        ('{"patient_id": "P1", "exam_id": "E1"}', "slide_number: missing"),
        ('{"patient_id": "P1", "exam_id": "E1", "slide_number": 1, "slidenumber": 2}', "unknown key(s) slidenumber"),
        ('{"patient_id": "P1", "exam_id": "E1", "slide_number": 1, "mpp": -1}', "mpp must be a positive number"),
        ('["P1", "E1", 1]', "expected a JSON object"),
        ("patient=P1", "not a UTF-8 JSON document"),
    ],
)
async def test_bad_sidecar_rejects_the_scan_with_a_reason(folder, clock, recorder, tmp_path, sidecar, reason) -> None:
    scan = tmp_path / "scan.svs"
    scan.write_bytes(b"x")
    scan.with_name("scan.svs.json").write_text(sidecar)
    outcomes = await settle(folder, clock)
    assert [o.status for o in outcomes] == ["rejected"]
    assert recorder.requests == []
    assert (tmp_path / "rejected" / "scan.svs").read_bytes() == b"x"  # kept for inspection
    assert (tmp_path / "rejected" / "scan.svs.json").read_text() == sidecar
    assert reason in (tmp_path / "rejected" / ("scan.svs" + REASON_SUFFIX)).read_text()


async def test_malformed_ids_in_the_name_reject_without_echoing_them(folder, clock, recorder, tmp_path) -> None:
    (tmp_path / "SMITH JOHN+E1+1.svs").write_bytes(b"x")
    outcomes = await settle(folder, clock)
    assert [o.status for o in outcomes] == ["rejected"]
    reason = (tmp_path / "rejected" / ("SMITH JOHN+E1+1.svs" + REASON_SUFFIX)).read_text()
    assert "patient_id: malformed" in reason and "SMITH" not in reason


async def test_scan_without_identifiers_waits_for_its_sidecar_then_is_rejected(folder, clock, recorder, tmp_path) -> None:
    (tmp_path / "anonymous.svs").write_bytes(b"x")
    assert await settle(folder, clock) == []  # stable, but a sidecar may still come
    clock.now += 10
    outcomes = await folder.poll()
    assert [o.status for o in outcomes] == ["rejected"]
    assert "no sidecar" in (tmp_path / "rejected" / ("anonymous.svs" + REASON_SUFFIX)).read_text()


async def test_empty_file_is_rejected_by_ingest(folder, clock, recorder, tmp_path) -> None:
    (tmp_path / "P1+E1+1.svs").write_bytes(b"x")
    recorder.fail_with = IngestError("file is empty")
    outcomes = await settle(folder, clock)
    assert [(o.status, o.reason) for o in outcomes] == [("rejected", "file is empty")]


async def test_outage_keeps_the_file_and_retries_it(folder, clock, recorder, tmp_path) -> None:
    scan = tmp_path / "P1+E1+1.svs"
    scan.write_bytes(b"x")
    recorder.fail_with = ConnectionRefusedError("broker down")
    outcomes = await settle(folder, clock)
    assert [o.status for o in outcomes] == ["retry"]
    assert scan.exists() and not any((tmp_path / "rejected").iterdir())
    recorder.fail_with = None
    assert [o.status for o in await folder.poll()] == ["ingested"]
    assert len(recorder.requests) == 1 and not scan.exists()


async def test_in_progress_hidden_and_sidecar_files_are_never_scans(folder, clock, recorder, tmp_path) -> None:
    for name in ("P1+E1+1.svs.part", ".P1+E1+2.svs", "P1+E1+3.svs.tmp", "P1+E1+4.json", "P1+E1+5.svs~"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "P1+E1+6.svs").mkdir()
    assert await settle(folder, clock, seconds=100) == []
    assert recorder.requests == []


async def test_same_name_ingested_twice_keeps_both_in_done(folder, clock, recorder, tmp_path) -> None:
    for content in (b"first", b"rescan"):
        (tmp_path / "P1+E1+1.svs").write_bytes(content)
        await settle(folder, clock)
    assert (tmp_path / "done" / "P1+E1+1.svs").read_bytes() == b"first"
    assert (tmp_path / "done" / "P1+E1+1.1.svs").read_bytes() == b"rescan"
    assert len(recorder.requests) == 2


def test_stability_tracker_needs_the_settle_time(tmp_path, clock) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"1")
    tracker = StabilityTracker(settle_s=2.0, clock=clock)
    assert not tracker.observe(path)
    clock.now += 1.9
    assert not tracker.observe(path)
    clock.now += 0.2
    assert tracker.observe(path)
    path.unlink()
    assert not tracker.observe(path)


def test_helpers(tmp_path) -> None:
    (tmp_path / "a.svs").write_bytes(b"")
    assert unique_destination(tmp_path, "a.svs") == tmp_path / "a.1.svs"
    assert unique_destination(tmp_path, "b.svs") == tmp_path / "b.svs"
    assert is_candidate(tmp_path / "a.svs") and not is_candidate(tmp_path / "missing.svs")


def test_missing_watch_folder_is_an_error(tmp_path, recorder) -> None:
    with pytest.raises(NotADirectoryError):
        WatchFolder(tmp_path / "absent", recorder)


async def test_rejections_log_no_sidecar_key_and_no_file_name(folder, clock, recorder, tmp_path) -> None:
    """Failed before: ``watch.rejected`` logged the sidecar's unknown key (here a patient's
    name) and the sidecar's file name (here the patient's ID); the console line repeated them."""
    import structlog

    (tmp_path / "a.svs").write_bytes(b"x")
    (tmp_path / "a.svs.json").write_text('{"patient_id": "P1", "exam_id": "E1", "slide_number": 1, "Ada Lovelace": 1}')
    (tmp_path / "P-880011 scan.svs").write_bytes(b"x")
    with structlog.testing.capture_logs() as logs:
        outcomes = await settle(folder, clock)
        clock.now += 60
        outcomes += await folder.poll()
    assert sorted(o.status for o in outcomes) == ["rejected", "rejected"]
    shown = repr(logs) + " ".join(o.describe() for o in outcomes)
    assert "watch.rejected" in shown and "1 unknown key(s)" in shown and "no sidecar (<scan>.json)" in shown
    assert "Ada" not in shown and "P-880011" not in shown
    # The reason files beside the scans keep the details for whoever fixes them.
    assert "Ada Lovelace" in (tmp_path / "rejected" / ("a.svs" + REASON_SUFFIX)).read_text()
    assert "P-880011 scan.svs.json" in (tmp_path / "rejected" / ("P-880011 scan.svs" + REASON_SUFFIX)).read_text()
