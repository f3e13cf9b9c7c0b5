"""Distribution on the real stack (FerretDB, MinIO, Kafka): the terminal registry, assignments
created once under racing workers, the policy's task classes, the sweep (silent terminals
offline, their exams moved with history, waiting exams placed, reported exams done), and
pre-computation (distribution-priority requests read back from Kafka; scanned slides
skipped; forged events refused).

Every test uses task classes of its own, so terminals of other tests (and of other modules)
never match its exams; the module retires its terminals at the end, so the sweeps of later
modules' workers move nothing of ours to anyone.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from catalog.assignments import Assignments
from catalog.terminals import TerminalExists, Terminals
from core.kafka import EventSink, producer, tail_from_end, wait_for
from core.logging import log_salt, patient_ref
from core.secrets import key_digest, new_key
from core.settings import Settings
from distribution.policy import Policy, PolicySource
from distribution.precompute import ForgedAssignment
from distribution.service import DistributionService
from schemas.catalog import ReportRecord, TerminalRecord
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import DeadLetter, DistributionAssigned, Event, SlideStored, UpscaleRequested
from schemas.layout import hr_provenance_key, hr_tile_key, sr_levels
from schemas.topics import Priority, Topic, priority_partitions
from storage.runtime import Services
from tests.integration.test_tier_services import matching
from tests.integration.tierkit import WorkerProcess, commit_offsets, end_offsets, services, stage_slide, uid

pytestmark = pytest.mark.integration
SMALL = 200  # LR px: x8 gives 69 SR tiles, few enough to fill the hr-cache afterwards


class Recording:
    """Publishes to Kafka and remembers what it published."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.events: list[Event] = []

    async def __call__(self, event: Event, *, partition: int | None = None) -> None:
        await self.sink(event, partition=partition)
        self.events.append(event)

    def assigned(self, exam_id: str | None = None) -> list[DistributionAssigned]:
        return [e for e in self.events if isinstance(e, DistributionAssigned) and exam_id in (None, e.exam_id)]


@dataclass
class Env:
    settings: Settings
    svc: Services
    registered: list[str] = field(default_factory=list)

    @property
    def terminals(self) -> Terminals:
        return Terminals(self.svc.catalog.db)

    @property
    def assignments(self) -> Assignments:
        return Assignments(self.svc.catalog.db)

    def service(self, policy: Policy, sink: Recording | None = None) -> tuple[DistributionService, Recording]:
        sink = sink or Recording(self.svc.saver.publish)
        return DistributionService(self.svc.catalog.db, self.svc.store, sink, self.settings,
                                   PolicySource.fixed(policy)), sink

    async def terminal(self, tid: str, classes: list[str], capacity: int = 100, *, online_at: datetime | None = None,
                       owner_kind: str = "department", owner: str = "GI pathology") -> str:
        key = new_key()
        await self.terminals.register(TerminalRecord(terminal_id=tid, task_classes=classes, capacity_per_day=capacity,
                                                     owner_kind=owner_kind, owner=owner,  # type: ignore[arg-type]
                                                     key_digest=key_digest(key)))
        self.registered.append(tid)
        if online_at is not None:
            await self.terminals.heartbeat(tid, online_at)
        return key

    async def exam(self, body_part: str | None, pathologist: str | None = None) -> str:
        patient, exam_id = uid("PD"), uid("ED")
        await self.svc.catalog.ensure_patient(patient)
        await self.svc.catalog.ensure_exam(exam_id, patient, datetime.now(UTC), body_part=body_part)
        if pathologist is not None:
            await self.svc.catalog.exams.update_one({"_id": exam_id}, {"$set": {"pathologist": pathologist}})
        return exam_id


def stored(exam_id: str, slide_number: int = 1) -> SlideStored:
    ref = ObjectRef(bucket="recent", key=f"lr/{exam_id}/{slide_number:04d}.tiff")
    return SlideStored(patient_id="PD-x", exam_id=exam_id, slide_number=slide_number, state=ImageState.LR,
                       tier=StorageTier.RECENT, object=ref, mirror=ref, sha256="ab" * 32, size_bytes=100)


def policy(tag: str, *, grace_s: float = 60.0, prefer_owner: bool = False) -> Policy:
    return Policy.model_validate({
        "grace_period_s": grace_s, "prefer_owner": prefer_owner, "default_task_class": f"gen-{tag}",
        "rules": [{"name": f"gi-{tag}", "body_parts": ["Colon", "stomach"], "task_class": f"gi-{tag}"},
                  {"name": f"skin-{tag}", "body_parts": ["skin"], "task_class": f"derm-{tag}"}]})


@pytest.fixture(scope="module")
async def env(stack: Settings) -> AsyncIterator[Env]:
    async with services(stack) as svc:
        env = Env(stack, svc)
        yield env
        for tid in env.registered:  # nothing of ours may be handed around after this module
            await env.terminals.set_active(tid, False)


def tag() -> str:
    return uid("")[:8]


# --- registry -----------------------------------------------------------------------------


async def test_register_authenticate_retire_and_rotate(env: Env) -> None:
    tid = uid("T")
    key = await env.terminal(tid, ["gi"])
    found = await env.terminals.authenticate(tid, key)
    assert found is not None and found.terminal_id == tid and not found.online
    assert found.key_digest == key_digest(key) and key not in json.dumps(found.to_document(), default=str)
    for wrong_id, wrong_key in ((tid, new_key()), (tid, key_digest(key)), (uid("T"), key), (tid, "")):
        assert await env.terminals.authenticate(wrong_id, wrong_key) is None
    with pytest.raises(TerminalExists):
        await env.terminal(tid, ["gi"])

    rotated = new_key()
    await env.terminals.set_key(tid, key_digest(rotated))
    assert await env.terminals.authenticate(tid, key) is None
    assert await env.terminals.authenticate(tid, rotated) is not None

    await env.terminals.heartbeat(tid)
    retired = await env.terminals.set_active(tid, False)
    assert not retired.active and not retired.online
    assert await env.terminals.authenticate(tid, rotated) is None
    _, came_online = await env.terminals.heartbeat(tid)  # a late heartbeat does not revive it
    assert not came_online and not (await env.terminals.get(tid)).online  # type: ignore[union-attr]


async def test_heartbeat_and_offline_race_on_revision(env: Env) -> None:
    tid = uid("T")
    t0 = datetime.now(UTC).replace(microsecond=0)
    await env.terminal(tid, ["gi"], online_at=t0)
    assert not await env.terminals.mark_offline(tid, t0 - timedelta(seconds=1))  # it spoke after that
    assert await env.terminals.mark_offline(tid, t0)
    assert not await env.terminals.mark_offline(tid, t0)  # already offline: only one sweep takes it
    record, came_online = await env.terminals.heartbeat(tid, t0 + timedelta(seconds=5))
    assert came_online and record.online and record.last_heartbeat == t0 + timedelta(seconds=5)


async def test_cli_registers_with_a_private_key_file_and_refuses_clear_errors(env: Env, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from slidestream.cli import main

    tid, key_file = uid("T"), tmp_path / "terminal.key"
    argv = ["terminal", "register", "--id", tid, "--task-classes", f"gi-{tag()}", "--capacity", "40",
            "--owner-department", "GI pathology", "--key-file", str(key_file)]
    assert await asyncio.to_thread(main, argv) == 0
    env.registered.append(tid)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key not in capsys.readouterr().out
    assert await env.terminals.authenticate(tid, key) is not None

    assert await asyncio.to_thread(main, argv[:-2]) == 2  # already registered
    assert "already registered" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["terminal", "retire", uid("T")]) == 2
    assert "not registered" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["terminal", "rotate-key", tid]) == 0
    new = capsys.readouterr().out.strip()
    assert await env.terminals.authenticate(tid, key) is None and await env.terminals.authenticate(tid, new)
    assert await asyncio.to_thread(main, ["terminal", "list"]) == 0
    assert tid in capsys.readouterr().out


# --- on_stored ----------------------------------------------------------------------------


async def test_racing_workers_create_one_assignment_per_exam(env: Env) -> None:
    t = tag()
    now = datetime.now(UTC)
    await env.terminal(uid("TA"), [f"gi-{t}"], online_at=now)
    await env.terminal(uid("TB"), [f"gi-{t}"], online_at=now)
    first, sink = env.service(policy(t))
    second, _ = env.service(policy(t), sink)
    for _ in range(50):
        exam_id = await env.exam("colon")
        await asyncio.gather(first.on_stored(stored(exam_id, 1)), second.on_stored(stored(exam_id, 1)),
                             second.on_stored(stored(exam_id, 2)))
        record = await env.assignments.get(exam_id)
        assert record is not None and record.state == "assigned" and record.slide_numbers == [1, 2]
        announced = sink.assigned(exam_id)
        assert sorted(e.reason for e in announced) == ["new", "slides_added"], announced
        assert {e.terminal_id for e in announced} == {record.terminal_id}
        assert max(e.assignment_revision for e in announced) == record.revision
    count = await env.assignments.coll.count_documents({"_id": {"$in": [e.exam_id for e in sink.assigned()]}})
    assert count == 50


async def test_body_parts_go_to_the_terminals_of_their_task_class(env: Env) -> None:
    t, now = tag(), datetime.now(UTC)
    gi, derm = uid("TG"), uid("TD")
    await env.terminal(gi, [f"gi-{t}", "other"], online_at=now)
    await env.terminal(derm, [f"derm-{t}"], online_at=now)
    service, sink = env.service(policy(t))
    colon, skin, lung, none = (await env.exam("COLON"), await env.exam("Skin"), await env.exam("lung"),
                               await env.exam(None))
    for exam_id in (colon, skin, lung, none):
        await service.on_stored(stored(exam_id))
    assert (await env.assignments.get(colon)).terminal_id == gi  # type: ignore[union-attr]
    assert (await env.assignments.get(skin)).terminal_id == derm  # type: ignore[union-attr]
    for exam_id in (lung, none):  # the default class: no terminal of it is online
        waiting = await env.assignments.get(exam_id)
        assert waiting is not None and waiting.state == "waiting" and waiting.task_class == f"gen-{t}"
        assert sink.assigned(exam_id) == []
    event = sink.assigned(colon)[0]
    assert (event.reason, event.policy, event.priority, event.slide_numbers) == ("new", f"gi-{t}",
                                                                                  Priority.DISTRIBUTION, [1])
    # Redelivery changes nothing and publishes nothing.
    before = len(sink.events)
    assert await service.on_stored(stored(colon)) is None
    assert len(sink.events) == before and (await env.assignments.get(colon)).revision == 0  # type: ignore[union-attr]


async def test_owner_preference_and_load(env: Env) -> None:
    t, now = tag(), datetime.now(UTC)
    mine, other = uid("TM"), uid("TO")
    await env.terminal(mine, [f"gi-{t}"], 2, online_at=now, owner_kind="user", owner="dr.owner")
    await env.terminal(other, [f"gi-{t}"], 100, online_at=now)
    service, _ = env.service(policy(t, prefer_owner=True))
    exams = [await env.exam("colon", pathologist="dr.owner") for _ in range(3)]
    for exam_id in exams:
        await service.on_stored(stored(exam_id))
    holders = [(await env.assignments.get(e)).terminal_id for e in exams]  # type: ignore[union-attr]
    assert holders == [mine, mine, other]  # the owner's terminal until it is full (2 slides a day)
    assert await env.assignments.load(mine, now.date().isoformat()) == 2


# --- the sweep ----------------------------------------------------------------------------


async def test_silent_terminal_goes_offline_and_its_exams_move_with_history(env: Env) -> None:
    t = tag()
    t0 = datetime.now(UTC).replace(microsecond=0)
    a, b, c = uid("TA"), uid("TB"), uid("TC")
    await env.terminal(a, [f"gi-{t}"], online_at=t0)
    await env.terminal(b, [f"gi-{t}"], online_at=t0)
    service, sink = env.service(policy(t, grace_s=60))
    exams = [await env.exam("colon") for _ in range(4)]
    for exam_id in exams:
        await service.on_stored(stored(exam_id))
    on_a = [e for e in exams if (await env.assignments.get(e)).terminal_id == a]  # type: ignore[union-attr]
    assert on_a, "the load spreads over both terminals"

    t1 = t0 + timedelta(seconds=90)  # a stays silent past the grace; b speaks
    await env.terminals.heartbeat(b, t1)
    report = await service.sweep(t1)
    assert report.offline >= 1 and report.reassigned >= len(on_a)
    assert not (await env.terminals.get(a)).online  # type: ignore[union-attr]
    for exam_id in exams:
        record = await env.assignments.get(exam_id)
        assert record is not None and record.terminal_id == b and record.state == "assigned"
    for exam_id in on_a:
        record = await env.assignments.get(exam_id)
        assert [(h.terminal_id, h.reason) for h in record.history] == [(a, "offline")]  # type: ignore[union-attr]
        moved = [e for e in sink.assigned(exam_id) if e.reason == "reassigned"]
        assert [(e.terminal_id, e.assignment_revision) for e in moved] == [(b, record.revision)]  # type: ignore[union-attr]
    assert await env.assignments.of_terminal(a) == []

    t2 = t1 + timedelta(seconds=90)  # now b is silent too: nobody matching is online
    await service.sweep(t2)
    for exam_id in exams:
        record = await env.assignments.get(exam_id)
        assert record is not None and record.state == "waiting" and record.terminal_id is None
        assert [h.terminal_id for h in record.history][-1] == b

    await env.terminal(c, [f"gi-{t}"], online_at=t2)  # a terminal comes online: the waiting exams go there
    report = await service.sweep(t2)
    assert report.from_waiting == len(exams)
    for exam_id in exams:
        record = await env.assignments.get(exam_id)
        assert record is not None and record.terminal_id == c and record.state == "assigned"
        assert sink.assigned(exam_id)[-1].reason == "reassigned" and sink.assigned(exam_id)[-1].terminal_id == c
        assert a not in {e.terminal_id for e in sink.assigned(exam_id)[1:]}  # never back to an offline one


async def test_a_waiting_exam_is_assigned_when_a_terminal_comes_online(env: Env) -> None:
    t = tag()
    service, sink = env.service(policy(t))
    exam_id = await env.exam("skin")
    await service.on_stored(stored(exam_id))
    assert (await env.assignments.get(exam_id)).state == "waiting"  # type: ignore[union-attr]
    await service.sweep()
    assert (await env.assignments.get(exam_id)).state == "waiting"  # type: ignore[union-attr]
    tid = uid("TD")
    await env.terminal(tid, [f"derm-{t}"], online_at=datetime.now(UTC))
    await service.sweep()
    record = await env.assignments.get(exam_id)
    assert record is not None and (record.state, record.terminal_id, record.history) == ("assigned", tid, [])
    assert [(e.reason, e.terminal_id) for e in sink.assigned(exam_id)] == [("new", tid)]


async def test_a_final_report_makes_the_assignment_done(env: Env) -> None:
    t = tag()
    tid = uid("TG")
    await env.terminal(tid, [f"gi-{t}"], online_at=datetime.now(UTC))
    service, _ = env.service(policy(t))
    draft_exam, final_exam = await env.exam("colon"), await env.exam("colon")
    for exam_id in (draft_exam, final_exam):
        await service.on_stored(stored(exam_id))
    await env.svc.catalog.save_report(ReportRecord(exam_id=draft_exam, author="dr.a", status="draft"),
                                      expected_revision=None)
    await env.svc.catalog.save_report(ReportRecord(exam_id=final_exam, author="dr.a", status="final"),
                                      expected_revision=None)
    report = await service.sweep()
    assert report.done >= 1
    assert (await env.assignments.get(final_exam)).state == "done"  # type: ignore[union-attr]
    assert (await env.assignments.get(draft_exam)).state == "assigned"  # type: ignore[union-attr]
    assert [a.exam_id for a in await env.assignments.of_terminal(tid)] == [draft_exam]


async def test_one_worker_sweeps_at_a_time(env: Env) -> None:
    first, _ = env.service(policy(tag()))
    second = DistributionService(env.svc.catalog.db, env.svc.store, Recording(env.svc.saver.publish), env.settings,
                                 PolicySource.fixed(policy(tag())), worker_id="other-worker")
    assert await first.run_sweep() is not None
    assert await second.run_sweep() is None  # the first holds the lease
    await first.sweep_lease.release()


# --- pre-computation ----------------------------------------------------------------------


async def stored_exam(env: Env, slides: int) -> str:
    patient, exam_id = uid("PD"), uid("ED")
    for number in range(1, slides + 1):
        await env.svc.saver.save(await stage_slide(env.svc, patient_id=patient, exam_id=exam_id,
                                                   slide_number=number, size=SMALL))
    await env.svc.catalog.exams.update_one({"_id": exam_id}, {"$set": {"body_part": "colon"}})
    return exam_id


async def test_precompute_asks_for_every_missing_tile_and_skips_scanned_slides(env: Env) -> None:
    t = tag()
    tid = uid("TG")
    await env.terminal(tid, [f"gi-{t}"], online_at=datetime.now(UTC))
    service, sink = env.service(policy(t))
    exam_id = await stored_exam(env, 2)
    for number in (1, 2):
        await service.on_stored(stored(exam_id, number))
    record = await env.assignments.get(exam_id)
    assert record is not None and record.terminal_id == tid and record.slide_numbers == [1, 2]

    scale = 8
    levels = sr_levels(SMALL, SMALL, scale)
    temporary = env.svc.store.bucket(StorageTier.TEMPORARY)
    await env.svc.store.put_bytes(ObjectRef(bucket=temporary, key=hr_provenance_key(exam_id, 2, scale)), b"{}",
                                  content_type="application/json")  # slide 2 was scanned at 40x
    ready = [(levels[-1], c, 0) for c in range(3)]
    for level, col, row in ready:
        await env.svc.store.put_bytes(ObjectRef(bucket=temporary, key=hr_tile_key(exam_id, 1, scale, level, col, row)),
                                      b"png", content_type="image/png")
    manifest = {m.slide.slide_number: m for m in await service.manifest(exam_id, tid)}
    expected = manifest[1].slide.expected
    assert expected == 69 and manifest[1].present == sorted(ready) and not manifest[1].complete
    assert manifest[2].slide.scanned and not manifest[1].slide.scanned

    event = DistributionAssigned(terminal_id=tid, exam_id=exam_id, slide_numbers=[1, 2],
                                 priority=Priority.DISTRIBUTION, policy=record.rule,
                                 assignment_revision=record.revision)
    async with tail_from_end(env.settings, Topic.UPSCALE_REQUESTED.value, fetch_max_wait_ms=50) as consumer:
        done = await service.precompute(event)
        requests: list[tuple[UpscaleRequested, int]] = []
        while len(requests) < done.requests:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for tp, records in batch.items():
                for rec in records:
                    request = UpscaleRequested.model_validate_json(rec.value)
                    if request.exam_id == exam_id:
                        requests.append((request, tp.partition))
    missing = expected - len(ready)
    chunk = env.settings.distribution.chunk_tiles
    assert (done.tiles, done.scanned_slides) == (missing, 1)
    assert len(requests) == done.requests == -(-missing // chunk)
    asked = {(t.level, t.col, t.row) for r, _ in requests for t in r.tiles or ()}
    assert len(asked) == missing and not asked & set(ready)
    assert {r.slide_number for r, _ in requests} == {1}  # none for the scanned slide
    assert all(r.priority is Priority.DISTRIBUTION and r.requested_by == tid and r.deadline is None
               for r, _ in requests)
    assert {p for _, p in requests} <= set(priority_partitions(Priority.DISTRIBUTION))

    # Fill the hr-cache (as compute would): the manifest is complete, and the requests left on
    # the topic find their tiles cached if a later module's worker reads them.
    for level, col, row in asked:
        await env.svc.store.put_bytes(ObjectRef(bucket=temporary, key=hr_tile_key(exam_id, 1, scale, level, col, row)),
                                      b"png", content_type="image/png")
    manifest = {m.slide.slide_number: m for m in await service.manifest(exam_id, tid)}
    assert manifest[1].complete and len(manifest[1].present) == expected
    again = await service.precompute(event)
    assert (again.requests, again.tiles) == (0, 0)


async def test_forged_events_are_permanent_errors_and_stale_ones_are_skipped(env: Env) -> None:
    t = tag()
    t0 = datetime.now(UTC).replace(microsecond=0)
    a, b, stranger = uid("TA"), uid("TB"), uid("TX")
    await env.terminal(a, [f"gi-{t}"], online_at=t0)
    await env.terminal(stranger, ["other"], online_at=t0)
    service, sink = env.service(policy(t))
    exam_id = await env.exam("colon")
    await service.on_stored(stored(exam_id))
    await env.terminal(b, [f"gi-{t}"], online_at=t0 + timedelta(seconds=90))
    await service.sweep(t0 + timedelta(seconds=90))  # a silent: the exam moves to b
    record = await env.assignments.get(exam_id)
    assert record is not None and record.terminal_id == b and record.revision == 1

    def event(terminal: str, revision: int, slides: list[int] | None = None, exam: str = exam_id) -> DistributionAssigned:
        return DistributionAssigned(terminal_id=terminal, exam_id=exam, slide_numbers=slides or [1],
                                    priority=Priority.DISTRIBUTION, policy="x", assignment_revision=revision)

    for forged in (event(stranger, 1), event(stranger, 0), event(b, 2), event(b, 1, [1, 5]),
                   event(a, 1), event(a, 0, exam=uid("ED"))):
        with pytest.raises(ForgedAssignment):
            await service.precompute(forged)
    before = len(sink.events)
    stale = await service.precompute(event(a, 0))  # a held it at revision 0: stale, skipped quietly
    assert stale.stale and len(sink.events) == before


# --- the agent in a real Faust worker -----------------------------------------------------


@pytest.fixture
def worker(stack: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    group = uid("distribution-")
    topics = (Topic.SLIDE_STORED.value, Topic.DISTRIBUTION_ASSIGNED.value)
    asyncio.run(commit_offsets(stack, group, asyncio.run(end_offsets(stack, topics))))
    # Its sweep timer stays out of the way (the other tests sweep with their own clocks).
    process = WorkerProcess(stack, group, ("agents.distribution",), tmp_path / f"{group}.log",
                            extra_env={"SLIDESTREAM_DISTRIBUTION__SWEEP_INTERVAL_S": "3600"}).start()
    try:
        yield process
    finally:
        process.stop()


async def test_the_agent_assigns_stored_slides_and_dead_letters_forged_events(env: Env, stack: Settings,
                                                                             worker: WorkerProcess) -> None:

    tid = uid("TG")
    terminals = Terminals(env.svc.catalog.db)
    key = new_key()
    await terminals.register(TerminalRecord(terminal_id=tid, task_classes=["general"], capacity_per_day=10,
                                            owner_kind="department", owner="GI pathology",
                                            key_digest=key_digest(key)))
    env.registered.append(tid)
    await terminals.heartbeat(tid)
    patient, exam_id = uid("PD"), uid("ED")
    await env.svc.catalog.ensure_patient(patient)
    await env.svc.catalog.ensure_exam(exam_id, patient, datetime.now(UTC), body_part="lung")
    forged = DistributionAssigned(terminal_id=tid, exam_id=uid("ED"), slide_numbers=[1],
                                  priority=Priority.DISTRIBUTION, policy="x", assignment_revision=0)
    async with producer(stack) as prod, tail_from_end(stack, Topic.DEAD_LETTER.value) as letters:
        await prod.send_and_wait(Topic.SLIDE_STORED.value, stored(exam_id).to_json_bytes(), key=exam_id.encode())
        await prod.send_and_wait(Topic.DISTRIBUTION_ASSIGNED.value, forged.to_json_bytes(),
                                 key=forged.exam_id.encode())
        letter = await wait_for(letters, matching(DeadLetter, source_topic=Topic.DISTRIBUTION_ASSIGNED.value,
                                                  key_ref=patient_ref(forged.exam_id, log_salt(stack))),
                                timeout=120)
        assert "not backed by the catalog" in letter.error
    assignments = Assignments(env.svc.catalog.db)
    for _ in range(120):
        record = await assignments.get(exam_id)
        if record is not None:
            break
        await asyncio.sleep(0.5)
    assert record is not None and (record.state, record.terminal_id, record.rule) == ("assigned", tid, "default")
    await terminals.set_active(tid, False)

