"""Distribution of new exams to reading terminals (SPEC 2, issue 12): the server side.

* ``on_stored``: a stored slide creates its exam's assignment (one insert per exam: of two
  workers racing, one creates it) or joins the existing one (compare-and-set), and the
  terminal is told with ``distribution.assigned``;
* ``sweep``: exams whose report is final are done; terminals silent past the policy's grace
  go offline and their open exams move to another matching terminal (or wait); waiting
  exams get a terminal once one is online. One worker sweeps at a time (a catalog lease);
* ``precompute``: the checked assignment event asks compute for the exam's missing SR tiles;
* ``manifest``: what a terminal may download of an exam, for the terminal API.

Every change is a compare-and-set whose change function re-checks the state it expects on
the fresh record, so a heartbeat, a sweep and a new slide can interleave freely.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from pymongo.asynchronous.database import AsyncDatabase

from catalog.assignments import Assignments
from catalog.errors import UnknownExam
from catalog.lease import Lease
from catalog.repository import Catalog
from catalog.terminals import Terminals
from core.kafka import EventSink
from core.settings import Settings
from distribution.choose import Candidate, Choice, ExamNeed, choose
from distribution.hr_slides import HrSlides
from distribution.manifest import ExamManifests, SlideManifest
from distribution.policy import Policy, PolicySource
from distribution.precompute import Precomputed, Precomputer
from schemas.catalog import AssignmentHop, AssignmentRecord, AssignmentState, ExamRecord, TerminalRecord, db_now
from schemas.common import ImageState
from schemas.events import DistributionAssigned, SlideStored
from schemas.topics import Priority
from storage.objects import ObjectStore

log = structlog.get_logger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
SWEEP_LEASE = "distribution-sweep"
Reason = Literal["new", "slides_added", "reassigned"]


@dataclass
class SweepReport:
    done: int = 0
    offline: int = 0
    reassigned: int = 0
    to_waiting: int = 0
    from_waiting: int = 0
    topped_up: int = 0


class DistributionService:
    def __init__(self, db: AsyncDatabase[Any], store: ObjectStore, sink: EventSink, settings: Settings,
                 policy: PolicySource, *, clock: Callable[[], datetime] = db_now,
                 worker_id: str = WORKER_ID) -> None:
        self.catalog = Catalog(db)
        self.terminals = Terminals(db)
        self.assignments = Assignments(db)
        self.sink = sink
        self.policy = policy
        self.clock = clock
        slides = HrSlides(self.catalog, store, settings.viewer.target_magnification)
        self.manifests = ExamManifests(self.assignments, slides)
        self._precompute = Precomputer(self.assignments, slides, sink, settings.distribution.chunk_tiles)
        self.sweep_lease = Lease(db, SWEEP_LEASE, worker_id,
                                 timedelta(seconds=max(60.0, 3 * settings.distribution.sweep_interval_s)))
        self.stall_s = settings.distribution.stall_s
        # exam -> (revision, tiles present, when that count was first seen, top-up rounds):
        # what the sweep watches to find a pre-computation that stopped moving.
        self._progress: dict[str, tuple[int, int, float, int]] = {}

    # --- choosing ---------------------------------------------------------------------

    async def _candidates(self, task_class: str, day: str) -> list[Candidate]:
        """Online, active terminals of ``task_class`` with their load of ``day``."""
        found = []
        for t in await self.terminals.all():
            if t.online and t.active and task_class in t.task_classes:
                found.append(Candidate(t.terminal_id, frozenset(t.task_classes), t.capacity_per_day,
                                       await self.assignments.load(t.terminal_id, day), t.owner_kind, t.owner))
        return found

    async def _choose(self, task_class: str, slides: int, exam: ExamRecord | None, policy: Policy,
                      now: datetime) -> Choice:
        need = ExamNeed(task_class, slides, exam.pathologist if exam else None, exam.department if exam else None)
        return choose(need, await self._candidates(task_class, now.date().isoformat()),
                      prefer_owner=policy.prefer_owner)

    @staticmethod
    def _given(record: AssignmentRecord, choice: Choice, now: datetime) -> AssignmentRecord:
        """``record`` handed to the chosen terminal (or waiting, when none)."""
        if choice.terminal_id is None:
            return record.model_copy(update={"state": "waiting", "terminal_id": None, "assigned_day": None,
                                             "assigned_at": None, "over_capacity": False})
        return record.model_copy(update={"state": "assigned", "terminal_id": choice.terminal_id,
                                         "assigned_day": now.date().isoformat(), "assigned_at": now,
                                         "over_capacity": choice.over_capacity})

    async def _announce(self, record: AssignmentRecord, reason: Reason, slides: list[int] | None = None) -> None:
        if record.state != "assigned" or record.terminal_id is None:
            return
        await self.sink(DistributionAssigned(
            terminal_id=record.terminal_id, exam_id=record.exam_id, slide_numbers=slides or record.slide_numbers,
            priority=Priority.DISTRIBUTION, policy=record.rule, reason=reason,
            assignment_revision=record.revision))
        log.info("distribution.assigned", exam_id=record.exam_id, terminal_id=record.terminal_id, reason=reason,
                 revision=record.revision, over_capacity=record.over_capacity)

    # --- new slides -------------------------------------------------------------------

    async def on_stored(self, stored: SlideStored) -> AssignmentRecord | None:
        """The exam's assignment after this slide; None when nothing changed (redelivery, or
        not an LR slide). Publishes ``distribution.assigned`` for an assigned exam's change."""
        if stored.state != ImageState.LR:
            return None
        number = stored.slide_number
        existing = await self.assignments.get(stored.exam_id)
        if existing is None:
            exam = await self.catalog.get_exam(stored.exam_id)
            if exam is None:
                raise UnknownExam(stored.exam_id)
            policy, now = self.policy.current(), self.clock()
            rule, task_class = policy.classify(exam.body_part)
            choice = await self._choose(task_class, 1, exam, policy, now)
            draft = AssignmentRecord(exam_id=exam.exam_id, state="waiting", task_class=task_class,
                                     body_part=exam.body_part, rule=rule, slide_numbers=[number])
            record, created = await self.assignments.create(self._given(draft, choice, now))
            if created:
                await self._announce(record, "new")
                if record.state == "waiting":
                    log.info("distribution.waiting", exam_id=record.exam_id, task_class=task_class)
                return record
            existing = record  # another worker created it first: join it
        if number in existing.slide_numbers:
            return None

        def add(current: AssignmentRecord) -> AssignmentRecord | None:
            if number in current.slide_numbers:
                return None
            return current.model_copy(update={"slide_numbers": sorted([*current.slide_numbers, number])})

        changed = await self.assignments.update(stored.exam_id, add)
        if changed is not None:
            await self._announce(changed, "slides_added", [number])
        return changed

    # --- the sweep --------------------------------------------------------------------

    async def run_sweep(self, now: datetime | None = None) -> SweepReport | None:
        """Sweep if this worker holds the sweep lease (None: another worker does)."""
        if not await self.sweep_lease.acquire():
            return None
        return await self.sweep(now)

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        now = now or self.clock()
        policy = self.policy.current()
        report = SweepReport()
        await self._finish_reported(report)
        terminals = await self.terminals.all()
        silent_since = now - timedelta(seconds=policy.grace_period_s)
        for t in terminals:
            if t.online and (t.last_heartbeat is None or t.last_heartbeat < silent_since):
                if await self.terminals.mark_offline(t.terminal_id, silent_since):
                    report.offline += 1
                    log.warning("distribution.terminal_offline", terminal_id=t.terminal_id)
        # Every terminal that cannot read now gives its open exams away: also those taken
        # offline by an earlier sweep that stopped half way, and retired ones.
        for t in await self.terminals.all():
            if not (t.online and t.active):
                for assignment in await self.assignments.of_terminal(t.terminal_id):
                    await self._reassign(assignment, t, policy, now, report)
        for waiting in await self.assignments.waiting():
            record = await self._place_waiting(waiting, policy, now)
            report.from_waiting += record is not None
        await self._top_up_stalled(report)
        if any(vars(report).values()):
            log.info("distribution.swept", **vars(report))
        return report

    async def _finish_reported(self, report: SweepReport) -> None:
        """Exams whose report is final are done: terminals drop them from their list."""
        states: tuple[AssignmentState, ...] = ("assigned", "waiting")
        for state in states:
            for assignment in await self.assignments.in_state(state):
                found = await self.catalog.get_report(assignment.exam_id)
                if found is None or found.status != "final":
                    continue

                def finish(current: AssignmentRecord) -> AssignmentRecord | None:
                    return None if current.state == "done" else current.model_copy(update={"state": "done"})

                if await self.assignments.update(assignment.exam_id, finish) is not None:
                    report.done += 1

    async def _reassign(self, assignment: AssignmentRecord, gone: TerminalRecord, policy: Policy, now: datetime,
                        report: SweepReport) -> None:
        exam = await self.catalog.get_exam(assignment.exam_id)
        choice = await self._choose(assignment.task_class, len(assignment.slide_numbers), exam, policy, now)
        hop = AssignmentHop(terminal_id=gone.terminal_id, until=now, reason="offline" if gone.active else "retired")

        def move(current: AssignmentRecord) -> AssignmentRecord | None:
            if current.state != "assigned" or current.terminal_id != gone.terminal_id:
                return None  # done, or moved by someone else meanwhile
            return self._given(current.model_copy(update={"history": [*current.history, hop]}), choice, now)

        moved = await self.assignments.update(assignment.exam_id, move)
        if moved is None:
            return
        if moved.state == "waiting":
            report.to_waiting += 1
            log.warning("distribution.waiting", exam_id=moved.exam_id, task_class=moved.task_class)
        else:
            report.reassigned += 1
            await self._announce(moved, "reassigned")

    async def _place_waiting(self, waiting: AssignmentRecord, policy: Policy, now: datetime) -> AssignmentRecord | None:
        exam = await self.catalog.get_exam(waiting.exam_id)
        choice = await self._choose(waiting.task_class, len(waiting.slide_numbers), exam, policy, now)
        if choice.waiting:
            return None

        def place(current: AssignmentRecord) -> AssignmentRecord | None:
            return self._given(current, choice, now) if current.state == "waiting" else None

        placed = await self.assignments.update(waiting.exam_id, place)
        if placed is not None:
            await self._announce(placed, "reassigned" if placed.history else "new")
        return placed

    async def _top_up_stalled(self, report: SweepReport) -> None:
        """An assigned exam whose computed tiles have not grown for ``stall_s`` while some are
        missing gets the missing ones asked for again (at most once per ``stall_s``)."""
        now_s = time.monotonic()
        open_ = await self.assignments.in_state("assigned")
        for gone in set(self._progress) - {a.exam_id for a in open_}:
            del self._progress[gone]
        for record in open_:
            revision, count, since, rounds = self._progress.get(record.exam_id, (-1, -1, now_s, 0))
            if revision == record.revision and count >= 0 and now_s - since < self.stall_s:
                continue  # looked at recently
            present, expected = await self._precompute.missing(record)
            if present >= expected:
                self._progress[record.exam_id] = (record.revision, present, now_s, rounds)
                continue
            if revision == record.revision and present == count:  # no progress for stall_s
                done = await self._precompute.top_up(record, rounds + 1)
                report.topped_up += done.tiles > 0
                log.warning("distribution.top_up", exam_id=record.exam_id, terminal_id=record.terminal_id,
                            missing=expected - present, tiles=done.tiles, round=rounds + 1)
                rounds += 1
            self._progress[record.exam_id] = (record.revision, present, now_s, rounds)

    # --- pre-computation and the terminal's view ------------------------------------------

    async def precompute(self, event: DistributionAssigned) -> Precomputed:
        """Ask for the exam's missing SR tiles; ``ForgedAssignment`` (permanent) when the catalog
        does not back the event."""
        done = await self._precompute(event)
        log.info("distribution.precompute", exam_id=event.exam_id, terminal_id=event.terminal_id,
                 requests=done.requests, tiles=done.tiles, scanned_slides=done.scanned_slides, stale=done.stale)
        return done

    async def manifest(self, exam_id: str, terminal_id: str) -> list[SlideManifest]:
        return await self.manifests.manifest(exam_id, terminal_id)
