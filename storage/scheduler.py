"""The schedule function of SPEC 2: hospital events and an idle-time sweep decide tier moves
(rules in ``catalog.tiering``), and ``TierMover`` carries them out.

* ``on_discharge``: the patient's LR slides leave recent (to mid, or long if unused for the
  age limit) and their HR tiles leave the hr-cache at once.
* ``on_admission``: a returning patient's LR slides come back to recent.
* ``sweep``: resumes moves interrupted by a crash, then applies every rule to the catalog
  (mid -> long by age, long -> mid when read again, recent -> mid for discharges that were
  missed, HR eviction), up to ``batch`` moves per run. The tier agent calls it from a timer,
  only while the ingest and upscale queues are quiet.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from catalog import tiering
from catalog.provenance import check_not_future
from catalog.repository import Catalog
from catalog.tiering import Placement, TierPolicy
from schemas.catalog import AuditEntry, ImageRecord, PatientRecord, db_now
from schemas.common import ImageState, StorageTier
from schemas.events import PatientAdmitted, PatientDischarged
from schemas.layout import hr_prefix
from storage.mover import MoveResult, TierMover

log = structlog.get_logger(__name__)

PAGE = 1000


@dataclass
class EventOutcome:
    patient_known: bool
    results: list[MoveResult] = field(default_factory=list)
    orphan_hr_objects: int = 0

    @property
    def moved(self) -> int:
        return sum(r.outcome in ("moved", "dropped") for r in self.results)


@dataclass
class SweepReport:
    resumed: list[MoveResult] = field(default_factory=list)
    moves: list[MoveResult] = field(default_factory=list)
    examined: int = 0

    @property
    def moved(self) -> int:
        return sum(r.outcome in ("moved", "dropped") for r in self.moves)


def exam_hr_prefix(exam_id: str) -> str:
    """Key prefix of all HR tiles of one exam (parent of the per-slide prefix)."""
    return hr_prefix(exam_id, 1).rstrip("/").rsplit("/", 1)[0] + "/"


class TierScheduler:
    def __init__(self, catalog: Catalog, mover: TierMover, policy: TierPolicy, *, batch: int = 500,
                 stale_after: timedelta = timedelta(minutes=2),
                 clock: Callable[[], datetime] = db_now) -> None:
        self.catalog = catalog
        self.mover = mover
        self.store = mover.store
        self.policy = policy
        self.batch = batch
        self.stale_after = stale_after
        self.clock = clock

    # --- hospital events ---------------------------------------------------------------

    async def on_discharge(self, event: PatientDischarged) -> EventOutcome:
        check_not_future("discharge time", event.discharged_at, self.clock())
        patient, known = await self.catalog.record_discharge(event.patient_id, event.discharged_at,
                                                             visit_id=event.visit_id)
        outcome = EventOutcome(patient_known=known)
        if not known:
            # Common (most discharged patients never had pathology): the status is recorded so
            # slides arriving later are placed right; there is nothing to move.
            await self._audit("discharge", event.patient_id, "not_found", "patient had no catalog entry")
            return outcome
        now = self.clock()
        for image in await self._settled_images(event.patient_id, outcome):
            placement = tiering.on_discharge(image, patient, now, self.policy)
            if placement is not None:
                outcome.results.append(await self.mover.move(image, placement.tier, placement.reason))
        if patient.status != "admitted":
            outcome.orphan_hr_objects = await self._drop_orphan_hr(event.patient_id)
        return outcome

    async def _settled_images(self, patient_id: str, outcome: EventOutcome,
                              state: ImageState | None = None) -> list[ImageRecord]:
        """The patient's images after finishing any move a crashed worker left half done
        (a redelivered event must complete it even if the image needs no further move)."""
        images = await self.catalog.find_images(patient_id=patient_id, state=state)
        if not any(image.pending_move is not None for image in images):
            return images
        for image in images:
            if image.pending_move is not None:
                outcome.results.append(await self.mover.resume(image))
        return await self.catalog.find_images(patient_id=patient_id, state=state)

    async def _drop_orphan_hr(self, patient_id: str) -> int:
        """HR tiles written to the cache without a catalog entry (a compute worker that died
        before reporting) would otherwise outlive the discharge: remove them by exam prefix."""
        bucket = self.store.bucket(StorageTier.TEMPORARY)
        removed = 0
        for exam in await self.catalog.exams_of_patient(patient_id):
            removed += await self.store.delete_prefix(bucket, exam_hr_prefix(exam.exam_id))
        return removed

    async def on_admission(self, event: PatientAdmitted) -> EventOutcome:
        check_not_future("admission time", event.admitted_at, self.clock())
        known = await self.catalog.get_patient(event.patient_id) is not None
        patient = await self.catalog.record_admission(event.patient_id, event.admitted_at, visit_id=event.visit_id,
                                                      ward=event.ward, identity=event.identity)
        outcome = EventOutcome(patient_known=known)
        if patient.status != "admitted":
            return outcome  # an admission older than the latest discharge
        for image in await self._settled_images(event.patient_id, outcome, state=ImageState.LR):
            placement = tiering.on_admission(image)
            if placement is not None:
                outcome.results.append(await self.mover.move(image, placement.tier, placement.reason))
        return outcome

    # --- idle-time sweep ---------------------------------------------------------------

    async def resume_interrupted(self, *, now: datetime | None = None) -> list[MoveResult]:
        """Finish moves whose worker died (markers older than ``stale_after``)."""
        now = now or self.clock()
        results = []
        for image in await self.catalog.pending_moves(now - self.stale_after, limit=self.batch):
            log.info("tier_move.resuming", exam_id=image.exam_id, slide=image.slide_number,
                     step=image.pending_move.step if image.pending_move else None)
            results.append(await self.mover.resume(image))
        return results

    async def sweep(self, *, now: datetime | None = None) -> SweepReport:
        now = now or self.clock()
        report = SweepReport(resumed=await self.resume_interrupted(now=now))
        budget = self.batch
        cutoff = now - self.policy.age_limit
        groups = (
            # Missed discharges and unknown-status slides past the age limit.
            (ImageState.LR, StorageTier.RECENT, None),
            # mid -> long candidates: acquired before the cutoff (last use decides).
            (ImageState.LR, StorageTier.MID, cutoff),
            # Slides in long storage read again since the cutoff go back to mid.
            (ImageState.LR, StorageTier.LONG, None),
            # HR cache entries of patients not in hospital, unused for a while.
            (ImageState.HR, StorageTier.TEMPORARY, None),
        )
        for state, tier, acquired_before in groups:
            if budget <= 0:
                break
            async for image, patient in self._candidates(state, tier, acquired_before, now, cutoff):
                report.examined += 1
                placement = tiering.decide(image, patient, now, self.policy)
                if placement is None:
                    continue
                report.moves.append(await self._apply(image, placement))
                budget -= 1
                if budget <= 0:
                    break
        if report.moves or report.resumed:
            log.info("tier_sweep.done", examined=report.examined, moved=report.moved,
                     resumed=len(report.resumed))
        return report

    async def _apply(self, image: ImageRecord, placement: Placement) -> MoveResult:
        return await self.mover.move(image, placement.tier, placement.reason)

    async def _candidates(self, state: ImageState, tier: StorageTier, acquired_before: datetime | None,
                          now: datetime, cutoff: datetime):
        """Candidate images with their patients, a page at a time (one query per page, no joins)."""
        if tier is StorageTier.LONG:
            page = await self.catalog.accessed_since(state, tier, cutoff, limit=PAGE)
            for pair in await self._with_patients(page):
                yield pair
            return
        # Oldest acquisition days first, one pushed-down equality query per day
        # (Catalog.sweep_pages); the order within a day does not change any decision.
        pages = self.catalog.sweep_pages(state, tier, acquired_before=acquired_before, limit=PAGE)
        async with aclosing(pages):
            async for page in pages:
                for pair in await self._with_patients(page):
                    yield pair

    async def _with_patients(self, page: list[ImageRecord]) -> list[tuple[ImageRecord, PatientRecord | None]]:
        patients = await self.catalog.patients_by_id(image.patient_id for image in page)
        return [(image, patients.get(image.patient_id)) for image in page if image.pending_move is None]

    async def _audit(self, action: str, patient_id: str, outcome: str, note: str) -> None:
        await self.catalog.audit(AuditEntry(actor="tier-agent", action=action, outcome=outcome,  # type: ignore[arg-type]  # outcome is one of the literals
                                            target={"patient_id": patient_id}, detail={"note": note}))

