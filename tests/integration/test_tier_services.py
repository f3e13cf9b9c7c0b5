"""Save, tier moves, the idle sweep and retrieval on the real servers, including every kind of
bad input of issue 5: unknown patients and exams, duplicates, conflicting slides, missing
objects, and storage or database outages (retried with backoff)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from catalog.errors import ExamPatientMismatch, UnknownExam, UnknownImage, UnknownPatient
from core.kafka import tail_from_end, wait_for
from core.retry import with_retries
from core.settings import Settings, TierEndpoint
from infra import stack as local_stack
from schemas.catalog import ImageRecord
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import PatientAdmitted, PatientDischarged, SlideStored, TierMoved, TileRef
from schemas.layout import hr_prefix, hr_tile_key
from schemas.topics import Topic
from storage.errors import ChecksumMismatch, ImageConflict, MissingObject
from storage.mover import TierMover
from storage.objects import ObjectStore
from storage.retrieval import InvalidTileRequest
from tests.integration.tierkit import lr_tiff, object_sha, services, stage_slide, uid

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC)


def matching(model, **fields):
    def parse(raw: bytes):
        try:
            event = model.model_validate_json(raw)
        except Exception:  # noqa: BLE001 - other events on the topic
            return None
        return event if all(getattr(event, k) == v for k, v in fields.items()) else None
    return parse


async def saved_patient(svc, slides: int = 2, *, admitted: bool = True) -> tuple[str, str, list[ImageRecord]]:
    patient, exam = uid("P"), uid("E")
    if admitted:
        await svc.catalog.record_admission(patient, now() - timedelta(days=2))
    images = []
    for n in range(1, slides + 1):
        result = await svc.saver.save(await stage_slide(svc, patient_id=patient, exam_id=exam, slide_number=n))
        images.append(result.image)
    return patient, exam, images


async def add_hr_tiles(svc, image: ImageRecord, tiles: int = 3) -> ImageRecord:
    bucket = svc.store.bucket(StorageTier.TEMPORARY)
    for i in range(tiles):
        key = hr_tile_key(image.exam_id, image.slide_number, 4, 12, i, 0)
        await svc.store.put_bytes(ObjectRef(bucket=bucket, key=key), b"png" * 10, content_type="image/png")
    record = ImageRecord(exam_id=image.exam_id, patient_id=image.patient_id, slide_number=image.slide_number,
                         state=ImageState.HR, tier=StorageTier.TEMPORARY,
                         object=ObjectRef(bucket=bucket, key=hr_prefix(image.exam_id, image.slide_number)),
                         acquired_at=now())
    return await svc.catalog.put_hr_image(record)


# --- save -----------------------------------------------------------------------------------

async def test_save_writes_recent_and_mirror_with_checksums_and_publishes(stack: Settings) -> None:
    async with services(stack) as svc, tail_from_end(stack, Topic.SLIDE_STORED.value) as stored_topic:
        patient, exam = uid("P"), uid("E")
        event = await stage_slide(svc, patient_id=patient, exam_id=exam, slide_number=3)
        result = await svc.saver.save(event)
        stored = await wait_for(stored_topic, matching(SlideStored, exam_id=exam), timeout=30)
        image = await svc.catalog.get_image(exam, 3, ImageState.LR)
        assert result.status == "stored" and image is not None
        assert image.tier is StorageTier.RECENT and image.object.bucket == stack.storage.recent.bucket
        assert image.mirror.bucket == stack.storage.mirror.bucket
        assert image.sha256 == event.sha256 and image.size_bytes == event.size_bytes
        assert await object_sha(svc, image.object) == event.sha256 == await object_sha(svc, image.mirror)
        assert (await svc.catalog.get_patient(patient)).status == "unknown"
        assert (await svc.catalog.get_exam(exam)).patient_id == patient
        assert stored.object == image.object and stored.sha256 == event.sha256


async def test_a_duplicate_event_changes_nothing(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam = uid("P"), uid("E")
        event = await stage_slide(svc, patient_id=patient, exam_id=exam)
        first = await svc.saver.save(event)
        before = await svc.catalog.images.find_one({"exam_id": exam}, {"_id": 0})
        again = await svc.saver.save(event.model_copy(update={"event_id": event.event_id}))
        after = await svc.catalog.images.find_one({"exam_id": exam}, {"_id": 0})
        assert again.status == "duplicate" and before == after
        assert again.event.event_id == first.event.event_id  # a repeat is recognisable downstream
        assert await svc.catalog.images.count_documents({"exam_id": exam}) == 1


async def test_a_different_scan_for_a_stored_slide_is_refused(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam = uid("P"), uid("E")
        await svc.saver.save(await stage_slide(svc, patient_id=patient, exam_id=exam))
        other = await stage_slide(svc, patient_id=patient, exam_id=exam, data=lr_tiff(3))
        with pytest.raises(ImageConflict):
            await svc.saver.save(other)
        image = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert await object_sha(svc, image.object) == image.sha256 != other.sha256


async def test_an_exam_of_another_patient_is_refused_and_nothing_is_written(stack: Settings) -> None:
    async with services(stack) as svc:
        owner, intruder, exam = uid("P"), uid("P"), uid("E")
        await svc.saver.save(await stage_slide(svc, patient_id=owner, exam_id=exam))
        wrong = await stage_slide(svc, patient_id=intruder, exam_id=exam, slide_number=2)
        with pytest.raises(ExamPatientMismatch):
            await svc.saver.save(wrong)
        assert await svc.catalog.get_image(exam, 2, ImageState.LR) is None
        assert await svc.catalog.get_patient(intruder) is None
        assert not await svc.store.exists(svc.store.ref("recent", f"lr/{exam}/0002.tiff"))


async def test_a_missing_or_corrupt_ingest_object_is_refused_cleanly(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam = uid("P"), uid("E")
        event = await stage_slide(svc, patient_id=patient, exam_id=exam)
        await svc.store.delete(event.lr)
        with pytest.raises(MissingObject):
            await svc.saver.save(event)
        lying = await stage_slide(svc, patient_id=patient, exam_id=exam, sha256="0" * 64)
        with pytest.raises(ChecksumMismatch):
            await svc.saver.save(lying)
        assert await svc.catalog.get_image(exam, 1, ImageState.LR) is None
        assert not await svc.store.exists(svc.store.ref("recent", f"lr/{exam}/0001.tiff"))
        assert not await svc.store.exists(svc.store.ref("mirror", f"lr/{exam}/0001.tiff"))


# --- discharge and admission ----------------------------------------------------------------

async def test_discharge_moves_lr_to_mid_drops_hr_and_publishes(stack: Settings) -> None:
    async with services(stack) as svc, tail_from_end(stack, Topic.TIER_MOVED.value) as moved_topic:
        patient, exam, images = await saved_patient(svc)
        await add_hr_tiles(svc, images[0])
        orphan = ObjectRef(bucket=svc.store.bucket(StorageTier.TEMPORARY), key=hr_tile_key(exam, 2, 4, 12, 0, 0))
        await svc.store.put_bytes(orphan, b"tile without a catalog entry")
        outcome = await svc.scheduler.on_discharge(PatientDischarged(patient_id=patient, discharged_at=now()))
        assert outcome.patient_known and outcome.moved == 3 and outcome.orphan_hr_objects == 1
        for image in images:
            after = await svc.catalog.get_image(exam, image.slide_number, ImageState.LR)
            assert after.tier is StorageTier.MID and after.pending_move is None
            assert await object_sha(svc, after.object) == image.sha256
            assert not await svc.store.exists(image.object)
            assert await object_sha(svc, image.mirror) == image.sha256
        assert await svc.catalog.get_image(exam, 1, ImageState.HR) is None
        assert await svc.store.list_prefix(svc.store.bucket(StorageTier.TEMPORARY), f"hr/{exam}/") == []
        seen = set()
        while len(seen) < 3:
            event = await wait_for(moved_topic, matching(TierMoved, exam_id=exam), timeout=30)
            seen.add((event.slide_number, int(event.state), event.to_tier))
        assert seen == {(1, 0, StorageTier.MID), (2, 0, StorageTier.MID), (1, 1, None)}


async def test_duplicate_discharge_moves_nothing_and_readmission_promotes(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc)
        discharge = PatientDischarged(patient_id=patient, discharged_at=now())
        await svc.scheduler.on_discharge(discharge)
        again = await svc.scheduler.on_discharge(discharge)
        assert again.moved == 0
        back = await svc.scheduler.on_admission(PatientAdmitted(patient_id=patient, admitted_at=now()))
        assert back.moved == 2
        for image in images:
            after = await svc.catalog.get_image(exam, image.slide_number, ImageState.LR)
            assert after.tier is StorageTier.RECENT and await object_sha(svc, after.object) == image.sha256
            assert not await svc.store.exists(svc.store.ref("mid", image.object.key))


async def test_discharge_of_an_unknown_patient_is_recorded_without_moves(stack: Settings) -> None:
    async with services(stack) as svc:
        patient = uid("P")
        outcome = await svc.scheduler.on_discharge(PatientDischarged(patient_id=patient, discharged_at=now()))
        assert not outcome.patient_known and outcome.results == []
        assert (await svc.catalog.get_patient(patient)).status == "discharged"
        # A slide arriving later for this patient is saved, and the sweep places it in mid.
        exam = uid("E")
        await svc.saver.save(await stage_slide(svc, patient_id=patient, exam_id=exam))
        report = await svc.scheduler.sweep()
        assert any(m.exam_id == exam and m.to_tier is StorageTier.MID for m in report.moves)


# --- idle sweep: age and usage rules ---------------------------------------------------------

async def test_sweep_moves_old_mid_slides_to_long_and_recalls_read_ones(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=2)
        await svc.scheduler.on_discharge(PatientDischarged(patient_id=patient, discharged_at=now()))
        assert {i.tier for i in await svc.catalog.find_images(patient_id=patient)} == {StorageTier.MID}
        assert not any(m.exam_id == exam for m in (await svc.scheduler.sweep()).moves)  # young: stays

        later = now() + timedelta(days=400)
        report = await svc.scheduler.sweep(now=later)
        assert {(m.exam_id, m.to_tier) for m in report.moves if m.exam_id == exam} == {(exam, StorageTier.LONG)}
        in_long = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert in_long.tier is StorageTier.LONG and await object_sha(svc, in_long.object) == in_long.sha256

        await svc.catalog.record_access(in_long, later + timedelta(days=1))  # read again
        report = await svc.scheduler.sweep(now=later + timedelta(days=2))
        recalled = [m for m in report.moves if m.exam_id == exam]
        assert [(m.slide_number, m.to_tier) for m in recalled] == [(1, StorageTier.MID)]


async def test_sweep_evicts_idle_hr_tiles_of_patients_not_in_hospital(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1, admitted=False)
        await svc.catalog.record_discharge(patient, now())
        await add_hr_tiles(svc, images[0])
        report = await svc.scheduler.sweep(now=now() + timedelta(hours=25))
        assert any(m.exam_id == exam and m.outcome == "dropped" for m in report.moves)
        assert await svc.catalog.get_image(exam, 1, ImageState.HR) is None
        assert await svc.store.list_prefix(svc.store.bucket(StorageTier.TEMPORARY), hr_prefix(exam, 1)) == []


# --- missing objects, shared buckets, concurrent movers ---------------------------------------

async def test_a_lost_tier_copy_is_restored_from_the_mirror(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
        await svc.store.delete(images[0].object)
        await svc.scheduler.on_discharge(PatientDischarged(patient_id=patient, discharged_at=now()))
        after = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert after.tier is StorageTier.MID and await object_sha(svc, after.object) == images[0].sha256


async def test_an_image_missing_everywhere_fails_the_move_and_changes_nothing(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
        await svc.store.delete(images[0].object)
        await svc.store.delete(images[0].mirror)
        outcome = await svc.scheduler.on_discharge(PatientDischarged(patient_id=patient, discharged_at=now()))
        assert [r.outcome for r in outcome.results] == ["failed"]
        assert "neither" in outcome.results[0].detail
        after = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert after.tier is StorageTier.RECENT and after.pending_move is None
        assert not await svc.store.exists(svc.store.ref("mid", images[0].object.key))
        history = await svc.catalog.exam_history(exam)
        assert any(entry.action == "tier_move" and entry.outcome == "error" for entry in history)


async def test_tiers_sharing_a_bucket_only_relabel_and_never_delete(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
        shared = stack.storage.model_copy(update={"mid": TierEndpoint(bucket=stack.storage.recent.bucket)})
        store = ObjectStore(shared)
        mover = TierMover(svc.catalog, store, svc.mover.publish)
        result = await mover.move(images[0], StorageTier.MID, "discharge")
        assert result.outcome == "moved"
        after = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert after.tier is StorageTier.MID and after.object == images[0].object
        assert await object_sha(svc, after.object) == images[0].sha256


async def test_two_movers_racing_leave_exactly_one_copy(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
        other = TierMover(svc.catalog, svc.store, svc.mover.publish)
        results = await asyncio.gather(svc.mover.move(images[0], StorageTier.MID, "discharge"),
                                       other.move(images[0], StorageTier.MID, "discharge"))
        assert {r.outcome for r in results} <= {"moved", "conflict", "unchanged"}
        assert sum(r.outcome == "moved" for r in results) == 1
        after = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert after.tier is StorageTier.MID and after.pending_move is None
        assert await object_sha(svc, after.object) == images[0].sha256
        assert not await svc.store.exists(images[0].object)


# --- retrieval -----------------------------------------------------------------------------

async def test_retrieval_finds_by_ids_records_access_and_reads_ranges(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=2)
        found = await svc.retrieval.find(patient_id=patient, state=ImageState.LR)
        assert [i.slide_number for i in found] == [1, 2]
        assert [i.slide_number for i in await svc.retrieval.find(exam_id=exam, slide_number=2)] == [2]
        with pytest.raises(UnknownExam):
            await svc.retrieval.find(exam_id=uid("E"))
        with pytest.raises(UnknownPatient):
            await svc.retrieval.find(patient_id=uid("P"))
        with pytest.raises(UnknownImage):
            await svc.retrieval.lr(exam, 9, actor="viewer-test")
        image = await svc.retrieval.lr(exam, 1, actor="viewer-test")
        reader = svc.retrieval.lr_reader(image)
        assert await asyncio.to_thread(reader.read_range, 0, 4) == lr_tiff(1)[:4]
        touched = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert touched.access_count == 1 and touched.last_accessed_at is not None
        assert any(e.action == "retrieve" and e.outcome == "ok" for e in await svc.catalog.exam_history(exam))


async def test_hr_retrieval_answers_from_cache_and_falls_back_to_lr_without_compute(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
        from schemas.layout import sr_levels

        top = sr_levels(600, 600, 4).stop - 1
        cached_tile = TileRef(level=top, col=0, row=0)
        bucket = svc.store.bucket(StorageTier.TEMPORARY)
        await svc.store.put_bytes(ObjectRef(bucket=bucket, key=hr_tile_key(exam, 1, 4, top, 0, 0)), b"png")
        hit = await svc.retrieval.hr_tiles(exam, 1, 4, [cached_tile], actor="viewer-test")
        assert hit.status == "cached" and set(hit.tiles) == {cached_tile}
        miss = await svc.retrieval.hr_tiles(exam, 1, 4, [cached_tile, TileRef(level=top, col=1, row=0)],
                                            actor="viewer-test")
        assert miss.status == "unavailable" and miss.missing == [TileRef(level=top, col=1, row=0)]
        assert miss.lr.exam_id == exam  # the LR to show meanwhile
        with pytest.raises(InvalidTileRequest):
            await svc.retrieval.hr_tiles(exam, 1, 4, [TileRef(level=top, col=99, row=0)], actor="viewer-test")
        with pytest.raises(InvalidTileRequest):
            await svc.retrieval.hr_tiles(exam, 1, 4, [TileRef(level=2, col=0, row=0)], actor="viewer-test")


# --- outages: retried with backoff, nothing lost ------------------------------------------

async def test_storage_outage_is_retried_until_minio_is_back(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam = uid("P"), uid("E")
        event = await stage_slide(svc, patient_id=patient, exam_id=exam)
        await asyncio.to_thread(local_stack.down, stack, ["minio"])
        try:
            saving = asyncio.create_task(with_retries(lambda: svc.saver.save(event), what="save", base=0.2, cap=1.0))
            await asyncio.sleep(4)
            assert not saving.done()  # still retrying, not failed
            assert await svc.catalog.get_image(exam, 1, ImageState.LR) is None
        finally:
            await local_stack.up_async(stack, ["minio"], run_bootstrap=False)
        result = await asyncio.wait_for(saving, 120)
        assert result.status == "stored"
        assert await object_sha(svc, result.image.object) == event.sha256


async def test_database_outage_is_retried_until_the_catalog_is_back(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
        discharge = PatientDischarged(patient_id=patient, discharged_at=now())
        await asyncio.to_thread(local_stack.down, stack, ["ferretdb"])
        try:
            moving = asyncio.create_task(with_retries(lambda: svc.scheduler.on_discharge(discharge),
                                                      what="discharge", base=0.2, cap=1.0))
            await asyncio.sleep(4)
            assert not moving.done()
        finally:
            await local_stack.up_async(stack, ["ferretdb"], run_bootstrap=False)
        outcome = await asyncio.wait_for(moving, 120)
        assert outcome.moved == 1
        after = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert after.tier is StorageTier.MID and after.pending_move is None
        assert await object_sha(svc, after.object) == images[0].sha256


async def test_hr_request_and_answer_over_kafka_follow_the_contract(stack: Settings) -> None:
    """Retrieval publishes upscale.requested on an interactive partition and takes the matching
    upscale.done (answered here as the compute service would: tiles first, then the event)."""
    from core.kafka import producer, send_event
    from core.upscale_client import UpscaleClient
    from schemas.events import UpscaleDone, UpscaleRequested, UpscaleTileResult
    from schemas.layout import sr_levels
    from schemas.topics import Priority, priority_partitions
    from storage.retrieval import RetrievalService

    async with services(stack) as svc, UpscaleClient(stack) as gateway, \
            tail_from_end(stack, Topic.UPSCALE_REQUESTED.value) as requests:
        patient, exam, _ = await saved_patient(svc, slides=1)
        retrieval = RetrievalService(svc.catalog, svc.store, gateway, timeout_s=30)
        top = sr_levels(600, 600, 2).stop - 1
        wanted = [TileRef(level=top, col=0, row=0), TileRef(level=top, col=1, row=1)]

        async def compute_side() -> None:
            record = await asyncio.wait_for(requests.getone(), 30)
            request = UpscaleRequested.model_validate_json(record.value)
            assert record.partition in priority_partitions(Priority.INTERACTIVE)
            results = []
            for tile in request.tiles:
                ref = svc.store.ref(StorageTier.TEMPORARY, hr_tile_key(exam, 1, 2, tile.level, tile.col, tile.row))
                await svc.store.put_bytes(ref, b"png", content_type="image/png")
                results.append(UpscaleTileResult(tile=tile, object=ref, cached=False))
            async with producer(stack) as prod:
                await send_event(prod, Topic.UPSCALE_DONE.value, UpscaleDone(
                    request_id=request.request_id, exam_id=exam, slide_number=1, scale=2, results=results,
                    model="test-double"), key=exam)

        answering = asyncio.create_task(compute_side())
        result = await retrieval.hr_tiles(exam, 1, 2, wanted, actor="viewer-test")
        await answering
        assert result.status == "computed" and set(result.tiles) == set(wanted) and not result.missing
        again = await retrieval.hr_tiles(exam, 1, 2, wanted, actor="viewer-test")
        assert again.status == "cached"
        late = await retrieval.hr_tiles(exam, 1, 2, [TileRef(level=top, col=2, row=0)], actor="viewer-test",
                                        timeout_s=1.0)
        assert late.status == "timeout" and late.lr.exam_id == exam and "LR" in late.detail


# --- provenance: forged events are refused ------------------------------------------------

async def test_a_qc_passed_pointing_at_another_patients_slide_is_refused(stack: Settings) -> None:
    """Seen in a security review: a forged slide.qc_passed whose LR named another patient's
    stored slide got that slide copied into a new exam under a different patient."""
    from catalog.provenance import ForgedEvent

    async with services(stack) as svc:
        _, _, victim = await saved_patient(svc, slides=1)
        attacker, exam = uid("P"), uid("E")
        genuine = await stage_slide(svc, patient_id=attacker, exam_id=exam)
        forged = genuine.model_copy(update={"lr": victim[0].object, "sha256": victim[0].sha256})
        with pytest.raises(ForgedEvent, match="only QC's output"):
            await svc.saver.save(forged)
        assert await svc.catalog.get_image(exam, 1, ImageState.LR) is None
        assert not await svc.store.exists(svc.store.ref("recent", f"lr/{exam}/0001.tiff"))
        assert (await svc.saver.save(genuine)).status == "stored"  # QC's own output still is


async def test_a_discharge_dated_in_the_future_is_refused_and_changes_nothing(stack: Settings) -> None:
    """A discharge dated 2099 used to leave the patient 'discharged', so every later
    admission was ignored."""
    from catalog.provenance import ForgedEvent

    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
        before = await svc.catalog.get_patient(patient)
        with pytest.raises(ForgedEvent, match="in the future"):
            await svc.scheduler.on_discharge(PatientDischarged(
                patient_id=patient, discharged_at=datetime(2099, 1, 1, tzinfo=UTC)))
        with pytest.raises(ForgedEvent, match="in the future"):
            await svc.scheduler.on_admission(PatientAdmitted(
                patient_id=patient, admitted_at=now() + timedelta(hours=1)))
        assert await svc.catalog.get_patient(patient) == before
        assert (await svc.catalog.reload(images[0])).tier is StorageTier.RECENT
        outcome = await svc.scheduler.on_discharge(PatientDischarged(patient_id=patient, discharged_at=now()))
        assert [r.outcome for r in outcome.results] == ["moved"]  # a real discharge still works
