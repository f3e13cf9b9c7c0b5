"""The save and tier agents in a real Faust worker: events in, storage and catalog changes and
events out; bad events dead-lettered with a reason; offsets committed only after the work."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from core.kafka import Principal, producer, tail_from_end, wait_for
from core.logging import keyed_digest, log_salt, patient_ref
from core.settings import Settings
from infra import stack as local_stack
from schemas.common import ImageState, StorageTier
from schemas.events import DeadLetter, PatientDischarged, SlideStored, TierMoved, UpscaleDone
from schemas.topics import Topic
from tests.integration.test_tier_services import matching
from tests.integration.tierkit import (
    WORKER_TOPICS,
    WorkerProcess,
    commit_offsets,
    committed_offsets,
    end_offsets,
    lr_tiff,
    object_sha,
    services,
    stage_slide,
    uid,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(stack: Settings, tmp_path_factory: pytest.TempPathFactory):
    group = uid("agents-")
    asyncio.run(commit_offsets(stack, group, asyncio.run(end_offsets(stack, WORKER_TOPICS))))
    process = WorkerProcess(stack, group, ("agents.save", "agents.tiering"),
                            tmp_path_factory.mktemp("workers") / f"{group}.log").start()
    try:
        yield process
    finally:
        process.stop()


async def _send(settings: Settings, topic: str, value: bytes, key: str, principal: Principal = "app"):
    async with producer(settings, principal=principal) as prod:
        return await prod.send_and_wait(topic, value, key=key.encode())


async def _until(check, timeout: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{what} not reached in {timeout} s")


async def test_qc_passed_is_saved_and_stored_event_published(stack: Settings, worker: WorkerProcess) -> None:
    async with services(stack) as svc, tail_from_end(stack, Topic.SLIDE_STORED.value) as stored:
        patient, exam = uid("P"), uid("E")
        event = await stage_slide(svc, patient_id=patient, exam_id=exam)
        await _send(stack, Topic.SLIDE_QC_PASSED.value, event.to_json_bytes(), exam)
        announced = await wait_for(stored, matching(SlideStored, exam_id=exam), timeout=90)
        image = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert image.tier is StorageTier.RECENT and announced.sha256 == event.sha256
        assert await object_sha(svc, image.object) == event.sha256


@pytest.mark.parametrize("payload", [b"{not json", b'{"event_type": "slide.qc_passed", "exam_id": "E1"}'],
                         ids=["not-json", "schema-violation"])
async def test_invalid_events_are_dead_lettered(stack: Settings, worker: WorkerProcess, payload: bytes) -> None:
    async with tail_from_end(stack, Topic.DEAD_LETTER.value) as letters:
        await _send(stack, Topic.SLIDE_QC_PASSED.value, payload, "bad")
        # The letter keeps the payload's keyed digest (the worker's install salt), never the bytes.
        letter = await wait_for(letters, matching(DeadLetter, source_topic=Topic.SLIDE_QC_PASSED.value,
                                                  payload_digest=keyed_digest(payload, log_salt(stack))),
                                timeout=90)
    assert letter.error


async def test_conflicting_slide_and_unknown_exam_are_dead_lettered_with_reasons(stack: Settings,
                                                                                  worker: WorkerProcess) -> None:
    async with services(stack) as svc, tail_from_end(stack, Topic.DEAD_LETTER.value) as letters:
        patient, exam = uid("P"), uid("E")
        await svc.saver.save(await stage_slide(svc, patient_id=patient, exam_id=exam))
        rescan = await stage_slide(svc, patient_id=patient, exam_id=exam, data=lr_tiff(3))
        await _send(stack, Topic.SLIDE_QC_PASSED.value, rescan.to_json_bytes(), exam)
        letter = await wait_for(letters, matching(DeadLetter, source_topic=Topic.SLIDE_QC_PASSED.value,
                                                  key_ref=patient_ref(exam, log_salt(stack))), timeout=90)
        assert "different checksum" in letter.error
        unknown = UpscaleDone(request_id="8d1f6a52-3a1e-4f7e-9a59-0c3d2b1e4f70", exam_id=uid("E"), slide_number=1,
                              scale=4, results=[], model="test")
        await _send(stack, Topic.UPSCALE_DONE.value, unknown.to_json_bytes(), unknown.exam_id)
        letter = await wait_for(letters, matching(DeadLetter, source_topic=Topic.UPSCALE_DONE.value,
                                                  key_ref=patient_ref(unknown.exam_id, log_salt(stack))),
                                timeout=90)
        assert "not in the catalog" in letter.error


async def test_upscale_done_records_the_hr_cache_entry(stack: Settings, worker: WorkerProcess) -> None:
    async with services(stack) as svc:
        patient, exam = uid("P"), uid("E")
        await svc.saver.save(await stage_slide(svc, patient_id=patient, exam_id=exam))
        done = UpscaleDone(request_id="2b8c6a52-3a1e-4f7e-9a59-0c3d2b1e4f71", exam_id=exam, slide_number=1, scale=4,
                           results=[], model="test")
        await _send(stack, Topic.UPSCALE_DONE.value, done.to_json_bytes(), exam)
        hr = await _until(lambda: svc.catalog.get_image(exam, 1, ImageState.HR), what="HR record")
        assert hr.tier is StorageTier.TEMPORARY and hr.patient_id == patient and hr.width == 2400


async def test_discharge_event_moves_slides_through_the_agent(stack: Settings, worker: WorkerProcess) -> None:
    async with services(stack) as svc, tail_from_end(stack, Topic.TIER_MOVED.value) as moved:
        patient, exam = uid("P"), uid("E")
        await svc.catalog.record_admission(patient, datetime(2026, 1, 1, tzinfo=UTC))
        await svc.saver.save(await stage_slide(svc, patient_id=patient, exam_id=exam))
        discharge = PatientDischarged(patient_id=patient, discharged_at=datetime.now(UTC))
        await _send(stack, Topic.PATIENT_DISCHARGED.value, discharge.to_json_bytes(), patient, principal="his")
        event = await wait_for(moved, matching(TierMoved, exam_id=exam), timeout=90)
        assert event.to_tier is StorageTier.MID
        image = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert image.tier is StorageTier.MID


async def test_offset_is_not_committed_while_storage_is_down(stack: Settings, worker: WorkerProcess) -> None:
    async with services(stack) as svc:
        patient, exam = uid("P"), uid("E")
        event = await stage_slide(svc, patient_id=patient, exam_id=exam)
        await asyncio.to_thread(local_stack.down, stack, ["minio"])
        try:
            sent = await _send(stack, Topic.SLIDE_QC_PASSED.value, event.to_json_bytes(), exam)
            await asyncio.sleep(8)  # the worker has it and retries
            from aiokafka import TopicPartition

            tp = TopicPartition(Topic.SLIDE_QC_PASSED.value, sent.partition)
            assert (await committed_offsets(stack, worker.group)).get(tp, 0) <= sent.offset
            assert await svc.catalog.get_image(exam, 1, ImageState.LR) is None
        finally:
            await local_stack.up_async(stack, ["minio"], run_bootstrap=False)
        await _until(lambda: svc.catalog.get_image(exam, 1, ImageState.LR), what="slide saved after the outage")

        async def committed_past() -> bool:
            return (await committed_offsets(stack, worker.group)).get(tp, 0) > sent.offset

        await _until(committed_past, what="offset committed after the work")
        assert worker.proc.poll() is None  # the worker never gave up or crashed


async def test_demo_hook_saves_discharges_and_reports(stack: Settings, worker: WorkerProcess) -> None:
    from slidestream.demo.storage import demo_store_and_discharge

    lines: list[str] = []
    async with services(stack) as svc:
        patient, exam = uid("P"), uid("E")
        passed = [await stage_slide(svc, patient_id=patient, exam_id=exam, slide_number=n) for n in (1, 2)]
    async with producer(stack) as prod:
        for event in passed:
            await prod.send_and_wait(Topic.SLIDE_QC_PASSED.value, event.to_json_bytes(), key=exam.encode())
    outcome = await demo_store_and_discharge(stack, passed, timeout=120, echo=lines.append)
    assert [i.tier for i in outcome.stored] == [StorageTier.RECENT] * 2
    assert [i.tier for i in outcome.moved] == [StorageTier.MID] * 2
    text = "\n".join(lines)
    assert "ADT^A03 (discharge) -> AA" in text and "storage use per tier" in text
    assert patient not in text  # the demo prints exams and slides, not patient IDs
