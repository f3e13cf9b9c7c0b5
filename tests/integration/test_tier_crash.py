"""Crash safety of tier moves: the tier agent's worker process dies (``os._exit`` at a named
step, as abrupt as SIGKILL: no cleanup, no offset commit) between each pair of steps of a
move; after a restart no image is lost and none is left in two tiers.

The restarted worker joins a fresh consumer group positioned at the crashed group's
committed offsets. That is what rejoining the old group gives, without waiting for the dead
member's session (60 s) to expire at the broker.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.kafka import producer, send_event
from core.settings import Settings
from schemas.common import ImageState, StorageTier
from schemas.events import PatientDischarged, TierMoved
from schemas.layout import hr_prefix
from schemas.topics import Topic
from storage.faults import FAULT_EXIT_CODE
from tests.integration.test_tier_services import add_hr_tiles, saved_patient
from tests.integration.tierkit import (
    WorkerProcess,
    commit_offsets,
    committed_offsets,
    end_offsets,
    object_sha,
    services,
    uid,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODULES = ("agents.tiering",)
LR_FAULTS = ["after_plan", "after_copy", "after_verify", "after_catalog_update", "after_delete", "after_publish"]
HR_FAULTS = ["after_plan", "after_delete", "after_publish"]
# The crashed worker's move lease runs out after 2 s, so the restart takes the move over
# without waiting the default 30 s.
SHORT_LEASE = {"SLIDESTREAM_TIERING__MOVE_LEASE_S": "2"}


async def _catalog_names_a_verified_object(svc, exam: str, state: ImageState) -> None:
    """Invariant at the moment of the crash: the catalog's object exists with its checksum."""
    image = await svc.catalog.get_image(exam, 1, state)
    if state is ImageState.LR:
        assert image is not None
        assert await object_sha(svc, image.object) == image.sha256


async def _tier_moved_events(settings: Settings, start: dict, exam: str) -> list[TierMoved]:
    from core.kafka import new_consumer

    consumer = new_consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [tp for tp in start if tp.topic == Topic.TIER_MOVED.value]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, start[tp])
        found = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    event = TierMoved.model_validate_json(record.value)
                    if event.exam_id == exam:
                        found.append(event)
        return found
    finally:
        await consumer.stop()


async def _wait_settled(svc, exam: str, state: ImageState, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = await svc.catalog.get_image(exam, 1, state)
        if state is ImageState.HR and image is None:
            return
        if state is ImageState.LR and image.tier is StorageTier.MID and image.pending_move is None:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"exam {exam} not settled after {timeout} s")


async def _crash_and_recover(stack: Settings, tmp_path: Path, fault: str, exam: str, patient: str,
                             state: ImageState) -> list[TierMoved]:
    watched = ("patient.discharged", "patient.admitted", "upscale.done", Topic.TIER_MOVED.value)
    before = await end_offsets(stack, watched)
    crashed = uid("crash-")
    await commit_offsets(stack, crashed, {tp: o for tp, o in before.items() if tp.topic != Topic.TIER_MOVED.value})
    worker = WorkerProcess(stack, crashed, MODULES, tmp_path / f"{crashed}.log",
                           {"SLIDESTREAM_TIERING__FAULT_AT": fault, **SHORT_LEASE}).start()
    try:
        async with producer(stack, principal="his") as prod:  # only the HIS may discharge
            await send_event(prod, Topic.PATIENT_DISCHARGED.value,
                             PatientDischarged(patient_id=patient, discharged_at=datetime.now(UTC)),
                             key=patient)
        code = await worker.wait_exit(timeout=180)
    finally:
        worker.stop()
    assert code == FAULT_EXIT_CODE, f"worker exited {code}, not at the fault point; log {worker.log}"

    async with services(stack) as svc:
        await _catalog_names_a_verified_object(svc, exam, state)
        image = await svc.catalog.get_image(exam, 1, state)
        assert image is not None and image.pending_move is not None  # the crash left a marker

        # The crashed group never committed the discharge: the restart gets it again.
        left = await committed_offsets(stack, crashed)
        resumed = uid("restart-")
        await commit_offsets(stack, resumed, {tp: left.get(tp, o) for tp, o in before.items()
                                              if tp.topic != Topic.TIER_MOVED.value})
        restart = WorkerProcess(stack, resumed, MODULES, tmp_path / f"{resumed}.log").start()
        try:
            await _wait_settled(svc, exam, state)
        finally:
            restart.stop()
    return await _tier_moved_events(stack, before, exam)


@pytest.mark.parametrize("fault", LR_FAULTS)
async def test_lr_move_survives_a_crash_after_each_step(stack: Settings, tmp_path: Path, fault: str) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
    original = images[0]

    events = await _crash_and_recover(stack, tmp_path, fault, exam, patient, ImageState.LR)

    async with services(stack) as svc:
        image = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert image.tier is StorageTier.MID and image.pending_move is None
        assert await object_sha(svc, image.object) == original.sha256  # not lost
        assert not await svc.store.exists(original.object)  # not left in recent
        assert not await svc.store.exists(svc.store.ref(StorageTier.LONG, original.object.key))
        assert await object_sha(svc, original.mirror) == original.sha256  # mirror untouched
        assert await svc.catalog.images.count_documents({"exam_id": exam}) == 1
    lr_events = [e for e in events if e.state is ImageState.LR]
    assert lr_events and {e.event_id for e in lr_events} == {lr_events[0].event_id}  # repeats are recognisable
    assert lr_events[0].from_tier is StorageTier.RECENT and lr_events[0].to_tier is StorageTier.MID


@pytest.mark.parametrize("fault", HR_FAULTS)
async def test_hr_drop_survives_a_crash_after_each_step(stack: Settings, tmp_path: Path, fault: str) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
        # LR already in mid, so the discharge's only work is dropping the HR tiles.
        await svc.mover.move(images[0], StorageTier.MID, "discharge")
        await add_hr_tiles(svc, images[0], tiles=4)

    events = await _crash_and_recover(stack, tmp_path, fault, exam, patient, ImageState.HR)

    async with services(stack) as svc:
        assert await svc.catalog.get_image(exam, 1, ImageState.HR) is None
        bucket = svc.store.bucket(StorageTier.TEMPORARY)
        assert await svc.store.list_prefix(bucket, hr_prefix(exam, 1)) == []
        lr = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert lr.tier is StorageTier.MID and await object_sha(svc, lr.object) == images[0].sha256
    hr_events = [e for e in events if e.state is ImageState.HR]
    assert hr_events and all(e.to_tier is None for e in hr_events)
    assert len({e.event_id for e in hr_events}) == 1


async def test_the_idle_sweep_also_finishes_an_interrupted_move(stack: Settings, tmp_path: Path) -> None:
    """Recovery without a redelivered event: the sweep resumes markers left by dead workers."""
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
    before = await end_offsets(stack, ("patient.discharged",))
    group = uid("crash-")
    await commit_offsets(stack, group, before)
    worker = WorkerProcess(stack, group, MODULES, tmp_path / f"{group}.log",
                           {"SLIDESTREAM_TIERING__FAULT_AT": "after_verify", **SHORT_LEASE}).start()
    try:
        async with producer(stack, principal="his") as prod:  # only the HIS may discharge
            await send_event(prod, Topic.PATIENT_DISCHARGED.value,
                             PatientDischarged(patient_id=patient, discharged_at=datetime.now(UTC)),
                             key=patient)
        assert await worker.wait_exit(timeout=180) == FAULT_EXIT_CODE
    finally:
        worker.stop()
    async with services(stack) as svc:
        assert (await svc.catalog.get_image(exam, 1, ImageState.LR)).pending_move.step == "verified"
        results = await svc.scheduler.resume_interrupted(now=datetime.now(UTC) + timedelta(hours=1))
        assert any(r.exam_id == exam and r.outcome == "moved" for r in results)
        image = await svc.catalog.get_image(exam, 1, ImageState.LR)
        assert image.tier is StorageTier.MID and image.pending_move is None
        assert await object_sha(svc, image.object) == images[0].sha256
        assert not await svc.store.exists(images[0].object)
