"""What a slide leaves in the ingest bucket, on the real MinIO, Kafka and FerretDB: a saved
slide's upload and LR are deleted once the save (and, for a kept HR scan, the cut) is done,
in either order; repeats after the deletion neither fail nor duplicate; a crash between a
step and the deletion is repaired by the next delivery; the bucket carries the expiry rules."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from core.settings import IngestRetention, Settings
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import SlideQcPassed, SlideScanned
from schemas.layout import (
    LR_STAGING_PREFIX,
    QC_PREFIX,
    SCANS_PREFIX,
    hr_provenance_key,
    ingest_key,
    ingest_released_key,
)
from storage.hr_scan import ScannedHrCutter
from storage.ingest_lifecycle import ensure_ingest_lifecycle, ingest_expiry_rules, read_ingest_expiry
from storage.runtime import Services
from tests.integration.tierkit import lr_tiff, services, stage_slide, uid

pytestmark = pytest.mark.integration

HR_SCAN = "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif"  # 1000 x 1000 px at 40x: an LR of 125 px at 5x


class Crash(Exception):
    """Stands for the worker dying at this point (the event stays uncommitted)."""


async def _crash(*_args: object, **_kwargs: object) -> None:
    raise Crash()


async def ingest_objects(svc: Services, exam: str) -> list[str]:
    """Every key of ``exam`` in the ingest bucket, whatever the prefix."""
    bucket = svc.store.bucket("ingest")
    keys: list[str] = []
    for prefix in (SCANS_PREFIX, LR_STAGING_PREFIX, QC_PREFIX):
        keys += [key for key, _ in await svc.store.list_prefix(bucket, f"{prefix}{exam}/")]
    return keys


async def stage_pass(svc: Services, *, hr_scan: Path | None = None, size: int = 600) -> SlideQcPassed:
    """What QC leaves for one passing slide: the upload, the LR, the report; its event."""
    patient, exam = uid("P"), uid("E")
    upload = hr_scan.read_bytes() if hr_scan is not None else b"original scan bytes " * 64
    scan = ObjectRef(bucket=svc.store.bucket("ingest"), key=ingest_key(exam, 1, "scan.tif"))
    await svc.store.put_bytes(scan, upload, content_type="image/tiff")
    await svc.store.put_bytes(svc.store.ref("ingest", f"{QC_PREFIX}{exam}/0001/report.json"), b'{"passed": true}',
                              content_type="application/json")
    event = await stage_slide(svc, patient_id=patient, exam_id=exam, size=size,
                              data=lr_tiff(1, size) if size != 600 else None)
    return event.model_copy(update={"scan": scan, "hr_candidate": scan if hr_scan is not None else None})


def left_over(keys: list[str], exam: str) -> list[str]:
    """What may stay after the release: the QC report and the release marker (both under qc/,
    expiring with the QC retention)."""
    allowed = {f"{QC_PREFIX}{exam}/0001/report.json", ingest_released_key(exam, 1)}
    return [k for k in keys if k not in allowed]


@pytest.fixture(scope="module")
def hr_scan(stack: Settings) -> Path:
    path = stack.shared_data / HR_SCAN
    if not path.is_file():
        pytest.skip("shared data set not available")
    return path


def cutter(svc: Services) -> ScannedHrCutter:
    return ScannedHrCutter(svc.catalog, svc.store, target_magnification=40.0)


async def test_bootstrap_gives_the_ingest_bucket_its_expiry_rules(stack: Settings) -> None:
    wanted = ingest_expiry_rules(stack.storage.ingest_retention)
    found = await asyncio.to_thread(read_ingest_expiry, stack.storage)  # read back from MinIO
    assert {r.prefix: r.days for r in found if r in wanted} == {"scans/": 14, "lr-staging/": 14, "qc/": 30}
    assert await asyncio.to_thread(ensure_ingest_lifecycle, stack.storage) == "unchanged"
    changed = stack.storage.model_copy(update={"ingest_retention": IngestRetention(unsaved_days=3, qc_report_days=7)})
    try:
        assert await asyncio.to_thread(ensure_ingest_lifecycle, changed) == "set"
        again = await asyncio.to_thread(read_ingest_expiry, stack.storage)
        assert {r.prefix: r.days for r in again} == {"scans/": 3, "lr-staging/": 3, "qc/": 7}
    finally:
        assert await asyncio.to_thread(ensure_ingest_lifecycle, stack.storage) == "set"


async def test_a_saved_slide_leaves_nothing_but_its_qc_report_and_a_repeat_changes_nothing(stack: Settings) -> None:
    async with services(stack) as svc:
        event = await stage_pass(svc)
        exam = event.exam_id
        assert len(await ingest_objects(svc, exam)) == 3
        first = await svc.saver.save(event)
        assert first.status == "stored"
        assert left_over(await ingest_objects(svc, exam), exam) == []
        marker = json.loads(await svc.store.get_bytes(svc.store.ref("ingest", ingest_released_key(exam, 1))))
        assert marker["scan"] == event.scan.key and marker["lr_sha256"] == event.sha256
        # At-least-once delivery: the same event again, after the deletion.
        again = await svc.saver.save(event)
        assert again.status == "duplicate" and again.event.event_id == first.event.event_id
        assert await svc.catalog.images.count_documents({"exam_id": exam}) == 1
        image = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert image is not None and image.sha256 == event.sha256
        assert (await svc.store.checksum(image.object))[0] == event.sha256  # the stored copy is untouched


async def test_a_crash_between_save_and_release_is_repaired_by_the_redelivery(stack: Settings) -> None:
    async with services(stack) as svc:
        event = await stage_pass(svc)
        release = svc.saver.release.release
        svc.saver.release.release = _crash  # type: ignore[method-assign]
        try:
            with pytest.raises(Crash):
                await svc.saver.save(event)
        finally:
            svc.saver.release.release = release  # type: ignore[method-assign]
        # Saved and catalogued, the ingest objects still there: nothing lost, nothing deleted early.
        assert await svc.catalog.get_image(event.exam_id, 1, ImageState.LR) is not None
        assert await svc.store.exists(event.lr) and await svc.store.exists(event.scan)
        result = await svc.saver.save(event)  # the uncommitted event, delivered again
        assert result.status == "duplicate"
        assert left_over(await ingest_objects(svc, event.exam_id), event.exam_id) == []


async def test_a_kept_hr_scan_is_deleted_only_after_both_save_and_cut_in_either_order(stack: Settings, hr_scan) -> None:
    async with services(stack) as svc:
        # Save first: the LR goes at once, the scan waits for the cut.
        event = await stage_pass(svc, hr_scan=hr_scan, size=125)
        await svc.saver.save(event)
        keys = await ingest_objects(svc, event.exam_id)
        assert event.scan.key in keys and event.lr.key not in keys
        cut = await cutter(svc).cut(event)
        assert cut is not None and cut.tiles == 21 and not cut.already
        assert left_over(await ingest_objects(svc, event.exam_id), event.exam_id) == []
        # Repeats after the deletion: the cut is recognised as done, the save as a duplicate.
        assert (await cutter(svc).cut(event)).already
        assert (await svc.saver.save(event)).status == "duplicate"
        marker = svc.store.ref(StorageTier.TEMPORARY, hr_provenance_key(event.exam_id, 1, 8))
        assert json.loads(await svc.store.get_bytes(marker))["status"] == "complete"

        # Cut first: the scan stays (the save still needs the LR, the slide is not stored yet).
        other = await stage_pass(svc, hr_scan=hr_scan, size=125)
        assert (await cutter(svc).cut(other)).tiles == 21
        keys = await ingest_objects(svc, other.exam_id)
        assert other.scan.key in keys and other.lr.key in keys
        await svc.saver.save(other)
        assert left_over(await ingest_objects(svc, other.exam_id), other.exam_id) == []
        image = await svc.catalog.get_image(other.exam_id, 1, ImageState.LR)
        assert image is not None and (await svc.store.checksum(image.mirror))[0] == other.sha256


async def test_a_crash_between_cut_and_release_and_a_cut_repeated_after_eviction(stack: Settings, hr_scan) -> None:
    async with services(stack) as svc:
        event = await stage_pass(svc, hr_scan=hr_scan, size=125)
        await svc.saver.save(event)
        crashing = cutter(svc)
        crashing.release.release = _crash  # type: ignore[method-assign]
        with pytest.raises(Crash):
            await crashing.cut(event)
        assert await svc.store.exists(event.scan)  # cut complete, the scan not yet released
        assert (await cutter(svc).cut(event)).already  # the redelivery releases it
        assert left_over(await ingest_objects(svc, event.exam_id), event.exam_id) == []
        # The HR tiles dropped (discharge), then the event once more: nothing to cut, no marker
        # left claiming a cut in progress, no error.
        await svc.store.delete_prefix(svc.store.bucket(StorageTier.TEMPORARY), f"hr/{event.exam_id}/")
        assert await cutter(svc).cut(event) is None
        assert await svc.store.list_prefix(svc.store.bucket(StorageTier.TEMPORARY), f"hr/{event.exam_id}/") == []


async def test_hr_dropped_while_the_scan_is_cut_leaves_no_partial_scanned_set(stack: Settings, hr_scan) -> None:
    """A discharge that empties the hr-cache in the middle of a cut: no marker claiming a
    complete scan over a partial set of tiles (distribution would skip the slide as scanned and
    a terminal would wait for the missing tiles forever)."""
    async with services(stack) as svc:
        event = await stage_pass(svc, hr_scan=hr_scan, size=125)
        await svc.saver.save(event)
        racing = cutter(svc)
        cut_file = racing._cut_file
        bucket = svc.store.bucket(StorageTier.TEMPORARY)

        async def cut_then_discharge(*args, **kwargs):  # type: ignore[no-untyped-def]
            count = await cut_file(*args, **kwargs)
            await svc.store.delete_prefix(bucket, f"hr/{event.exam_id}/")  # the discharge's drop
            return count

        racing._cut_file = cut_then_discharge  # type: ignore[method-assign]
        assert await racing.cut(event) is None
        assert await svc.store.list_prefix(bucket, f"hr/{event.exam_id}/") == []
        assert left_over(await ingest_objects(svc, event.exam_id), event.exam_id) == []


async def test_a_refused_or_unsaved_slide_is_left_to_the_expiry_rules(stack: Settings) -> None:
    async with services(stack) as svc:
        event = await stage_pass(svc)
        released = await svc.saver.release.release(event)  # e.g. the HR agent, before any save
        assert not released.saved
        assert len(await ingest_objects(svc, event.exam_id)) == 3  # nothing deleted before the save


async def test_qc_answers_a_redelivered_scan_of_a_released_slide_with_nothing(stack: Settings) -> None:
    from datetime import UTC, datetime

    from qc.service import QcService, pipeline_options
    from storage.ingest_bucket import IngestBucket

    async with services(stack) as svc:
        event = await stage_pass(svc)
        await svc.saver.save(event)
        scanned = SlideScanned(patient_id=event.patient_id, exam_id=event.exam_id, slide_number=1,
                               ingest=event.scan, sha256=hashlib.sha256(b"x").hexdigest(), size_bytes=1,
                               scanner_id="it-scanner", acquired_at=datetime.now(UTC), original_filename="scan.tif")
        qc = QcService(pipeline_options(stack), IngestBucket(stack.storage, store=svc.store))
        assert await qc.handle(scanned) is None
        # Another upload of that slide that is simply missing is still refused as missing.
        lost = scanned.model_copy(update={"ingest": svc.store.ref("ingest", ingest_key(event.exam_id, 1, "scan.svs"))})
        verdict = await qc.handle(lost)
        assert verdict is not None and verdict.event_type == "slide.qc_failed"


async def test_concurrent_saves_of_one_event_all_succeed_once_the_first_released_the_lr(stack: Settings) -> None:
    """Two workers can hold the same event for a moment (a rebalance): the one that finds the
    LR already released by the other sees the slide saved, not a missing object."""
    async with services(stack) as svc:
        event = await stage_pass(svc)
        results = await asyncio.gather(*(svc.saver.save(event) for _ in range(4)))
        assert {r.image.sha256 for r in results} == {event.sha256}
        assert await svc.catalog.images.count_documents({"exam_id": event.exam_id}) == 1
        assert left_over(await ingest_objects(svc, event.exam_id), event.exam_id) == []
        # Deterministically: the LR gone with the slide saved, as the losing worker finds it.
        late = await svc.saver.save(event)
        assert late.status == "duplicate"


async def test_slide_command_shows_the_qc_report_while_kept_and_says_when_it_expired(stack: Settings) -> None:
    from datetime import timedelta

    from schemas.catalog import AuditEntry, db_now
    from slidestream.commands.operator import show_slide

    async with services(stack) as svc:
        event = await stage_pass(svc)
        await svc.saver.save(event)
        lines: list[str] = []
        await show_slide(stack, event.exam_id, 1, echo=lines.append)
        assert lines[1].startswith("  QC: passed")  # within the retention: the report is read
        # The lifecycle rule removes it after qc_report_days (here by hand; MinIO's scanner
        # does it at day granularity), and the slide was saved longer ago than that.
        await svc.store.delete(svc.store.ref("ingest", f"{QC_PREFIX}{event.exam_id}/0001/report.json"))
        lines.clear()
        await show_slide(stack, event.exam_id, 1, echo=lines.append)
        assert "no report" in lines[1] and "kept 30 days" in lines[1]  # saved today: not known to be expired
        await svc.catalog.audit(AuditEntry(at=db_now() - timedelta(days=31), actor="save-agent", action="save",
                                           outcome="ok", target={"exam_id": event.exam_id, "slide_number": 1,
                                                                 "state": 0}))
        lines.clear()
        await show_slide(stack, event.exam_id, 1, echo=lines.append)
        assert "QC: report expired (QC reports are kept 30 days" in lines[1]


async def test_a_pass_naming_another_slides_upload_is_refused_before_anything_is_written(stack: Settings) -> None:
    from catalog.provenance import ForgedEvent

    async with services(stack) as svc:
        victim = await stage_pass(svc)
        forged = await stage_pass(svc)
        forged = forged.model_copy(update={"scan": victim.scan})
        with pytest.raises(ForgedEvent):
            await svc.saver.save(forged)
        assert await svc.catalog.get_image(forged.exam_id, 1, ImageState.LR) is None
        assert await svc.store.exists(victim.scan)  # the other slide's upload is untouched
