"""Executes tier moves with the crash-safe protocol of ``catalog.moves``.

copy -> verify checksum -> update catalog -> delete source -> publish ``tier.moved``, with
the step recorded in the image's catalog document after each action, so a restarted
worker resumes the move where it stopped (``resume``) and no image is lost or kept twice.

One worker runs an image's move at a time: it holds a lease on the image
(``catalog.lease``, renewed while it works) and every catalog step is a compare-and-set,
so a second worker waits for the first and then finds the image moved, and a worker that
died mid-move is taken over once its lease has expired.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import structlog

from catalog import moves
from catalog.lease import COLLECTION as LEASES
from catalog.lease import Leases
from catalog.moves import Action
from catalog.repository import Catalog, image_id
from catalog.tiering import MoveReason
from core.kafka import EventSink
from schemas.catalog import AuditEntry, ImageRecord, PendingMove, db_now
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import TierMoved
from storage.errors import ImageLost, MoveConflict
from storage.faults import NO_FAULTS, FaultInjector
from storage.objects import ObjectStore

log = structlog.get_logger(__name__)

Outcome = Literal["moved", "dropped", "unchanged", "conflict", "failed"]


@dataclass(frozen=True)
class MoveResult:
    exam_id: str
    slide_number: int
    state: ImageState
    outcome: Outcome
    from_tier: StorageTier | None = None
    to_tier: StorageTier | None = None
    reason: str | None = None
    size_bytes: int = 0
    detail: str = ""


def _result(image: ImageRecord, outcome: Outcome, pending: PendingMove | None = None, detail: str = "") -> MoveResult:
    return MoveResult(image.exam_id, image.slide_number, image.state, outcome,
                      from_tier=pending.from_tier if pending else image.tier,
                      to_tier=pending.to_tier if pending else None,
                      reason=pending.reason if pending else None,
                      size_bytes=image.size_bytes or 0, detail=detail)


class TierMover:
    def __init__(self, catalog: Catalog, store: ObjectStore, publish: EventSink, *,
                 faults: FaultInjector = NO_FAULTS, actor: str = "tier-agent",
                 lease_ttl: timedelta = timedelta(seconds=30)) -> None:
        self.catalog = catalog
        self.store = store
        self.publish = publish
        self.faults = faults
        self.actor = actor
        self.owner = f"{actor}:{uuid.uuid4().hex[:12]}"  # one per mover: in-process movers exclude each other too
        self.lease_ttl = lease_ttl
        self._leases = Leases(catalog.db[LEASES], claims=catalog.claims)

    def _owning(self, image: ImageRecord) -> AbstractAsyncContextManager[bool]:
        """The image's move lease while the block runs (False: another live worker kept it)."""
        key = f"tier-move/{image_id(image.exam_id, image.slide_number, image.state)}"
        return self._leases.held(key, self.owner, self.lease_ttl, wait=2 * self.lease_ttl)

    # --- entry points ------------------------------------------------------------------

    async def move(self, image: ImageRecord, to_tier: StorageTier | None, reason: MoveReason) -> MoveResult:
        """Move ``image`` to ``to_tier`` (None: drop an HR cache entry). An interrupted earlier
        move of the same image is finished first."""
        async with self._owning(image) as owned:
            if not owned:
                return _result(image, "conflict", detail="being moved by another worker")
            current = await self.catalog.reload(image)
            if current is None:
                return _result(image, "unchanged", detail="image no longer in the catalog")
            if current.pending_move is not None:
                # We hold the lease, so the move's worker died: finish it (every step is
                # compare-and-set, so this is safe even if it was only slow); it may be ours.
                finished = await self._run(current)
                if finished.outcome in ("dropped", "conflict", "failed") or (
                        finished.outcome == "moved" and finished.to_tier is to_tier):
                    return finished
                current = await self.catalog.reload(image)
                if current is None:
                    return finished
            if to_tier is None:
                if current.state is not ImageState.HR:
                    raise ValueError("only HR cache entries can be dropped; LR images are permanent")
                pending = PendingMove(to_tier=None, step=moves.INITIAL_STEP_DROP, reason=reason,
                                      from_tier=current.tier, source=current.object)
            else:
                if current.state is ImageState.HR or not to_tier.permanent:
                    raise ValueError("tier moves are for LR images between permanent tiers")
                if current.tier is to_tier:
                    return _result(current, "unchanged", detail=f"already in {to_tier.value}")
                target = self.store.ref(to_tier, current.object.key)
                pending = PendingMove(to_tier=to_tier, target=target, step=moves.INITIAL_STEP_RELOCATE,
                                      reason=reason, from_tier=current.tier, source=current.object)
            claimed = await self.catalog.begin_move(current, pending)
            if claimed is None:
                return _result(current, "conflict", pending, "image changed or is being moved by another worker")
            self.faults.checkpoint("after_plan")
            return await self._run(claimed)

    async def resume(self, image: ImageRecord) -> MoveResult:
        """Finish the interrupted move recorded in ``image.pending_move``."""
        async with self._owning(image) as owned:
            if not owned:
                return _result(image, "conflict", detail="being moved by another worker")
            current = await self.catalog.reload(image)
            if current is None or current.pending_move is None:
                return _result(image, "unchanged", detail="no move pending")
            return await self._run(current)

    # --- the protocol ------------------------------------------------------------------

    async def _run(self, image: ImageRecord) -> MoveResult:
        """Run the remaining actions of the move recorded in ``image.pending_move``. ``image``
        is replaced by the stored record after every compare-and-set, so each step checks
        that nobody changed the image since the previous one."""
        move = image.pending_move
        assert move is not None
        source = move.source or image.object
        same = move.target is not None and self.store.same_location(source, move.target)
        current: ImageRecord = image
        try:
            for action in moves.plan(move, same_location=same):
                current = await self._do(action, current, move)
                fault = moves.FAULT_AFTER.get(action)
                if fault is not None:
                    self.faults.checkpoint(fault)
        except MoveConflict as exc:
            log.info("tier_move.conflict", exam_id=image.exam_id, slide=image.slide_number, detail=str(exc))
            return _result(image, "conflict", move, str(exc))
        except ImageLost as exc:
            await self._abort(current)
            log.error("tier_move.failed", exam_id=image.exam_id, slide=image.slide_number, detail=str(exc))
            await self._audit(image, move, "error", str(exc))
            return _result(image, "failed", move, str(exc))
        outcome: Outcome = "dropped" if move.to_tier is None else "moved"
        await self._audit(image, move, "ok")
        log.info("tier_move.done", exam_id=image.exam_id, slide=image.slide_number, state=int(image.state),
                 from_tier=move.from_tier.value if move.from_tier else None,
                 to_tier=move.to_tier.value if move.to_tier else None, reason=move.reason)
        return _result(image, outcome, move)

    @staticmethod
    def _conflict(image: ImageRecord, what: str) -> MoveConflict:
        return MoveConflict(f"exam {image.exam_id} slide {image.slide_number} changed {what}")

    async def _advance(self, image: ImageRecord, step: str) -> ImageRecord:
        advanced = await self.catalog.advance_move(image, step)
        if advanced is None:
            raise self._conflict(image, f"before the move reached '{step}'")
        return advanced

    async def _do(self, action: Action, image: ImageRecord, move: PendingMove) -> ImageRecord:
        if action is Action.COPY:
            await self._copy(image, move)
            return await self._advance(image, "copied")
        if action is Action.VERIFY:
            await self._verify(image, move)
            return await self._advance(image, "verified")
        if action is Action.UPDATE_CATALOG:
            relocated = await self.catalog.relocate(image)
            if relocated is None:
                raise self._conflict(image, "before the catalog update")
            return relocated
        if action is Action.DELETE_SOURCE:
            source = move.source or image.object
            if move.target is not None and not self.store.same_location(source, move.target):
                await self.store.delete(source)
            return await self._advance(image, "deleting")
        if action is Action.PUBLISH:
            await self.publish(self._event(image, move))
            return image
        if action is Action.CLEAR:
            cleared = await self.catalog.clear_move(image)
            if cleared is None:
                raise self._conflict(image, "(the move was finished by another worker)")
            return cleared
        if action is Action.DELETE_OBJECTS:
            ref = move.source or image.object
            if ref.key.endswith("/"):
                await self.store.delete_prefix(ref.bucket, ref.key)
            else:
                await self.store.delete(ref)
            return image
        if action is Action.DELETE_RECORD:
            if not await self.catalog.delete_image(image):
                raise self._conflict(image, "(the HR entry was dropped by another worker)")
            return image
        raise AssertionError(f"unknown action {action}")  # pragma: no cover

    async def _copy(self, image: ImageRecord, pending: PendingMove) -> None:
        """Copy from the first source that exists: the tier copy, else the mirror."""
        assert pending.target is not None
        for source in moves.copy_sources(image, pending):
            try:
                await self.store.copy(source, pending.target, sha256=image.sha256)
                return
            except FileNotFoundError:
                log.warning("tier_move.source_missing", exam_id=image.exam_id, slide=image.slide_number,
                            source=str(source))
        # Nothing to copy from: maybe a previous attempt already copied and then lost the source.
        if await self.store.exists(pending.target):
            return
        raise ImageLost(f"exam {image.exam_id} slide {image.slide_number}: neither the tier copy nor "
                        "the mirror exists")

    async def _target_ok(self, image: ImageRecord, target: ObjectRef) -> bool:
        found = await self.store.checksum(target)
        return found is not None and found[0] == image.sha256

    async def _verify(self, image: ImageRecord, pending: PendingMove) -> None:
        """Target bytes must hash to the catalog's checksum; a bad copy is redone from each
        source in turn (tier copy, mirror) before the move is given up."""
        assert pending.target is not None
        if image.sha256 is None or await self._target_ok(image, pending.target):
            return
        for source in moves.copy_sources(image, pending):
            try:
                await self.store.copy(source, pending.target, sha256=image.sha256)
            except FileNotFoundError:
                continue
            if await self._target_ok(image, pending.target):
                log.warning("tier_move.recopied", exam_id=image.exam_id, slide=image.slide_number,
                            source=str(source))
                return
        raise ImageLost(f"exam {image.exam_id} slide {image.slide_number}: no copy with the catalog's checksum")

    async def _abort(self, image: ImageRecord) -> None:
        """Undo a move that cannot complete, while the catalog still names the source."""
        move = image.pending_move
        if move is None or not moves.may_abort(move):
            return
        source = move.source or image.object
        if move.target is not None and not self.store.same_location(source, move.target):
            await self.store.delete(move.target)
        await self.catalog.clear_move(image)

    def _event(self, image: ImageRecord, pending: PendingMove) -> TierMoved:
        return TierMoved(
            event_id=moves.move_event_id(image, pending),
            patient_id=image.patient_id,
            exam_id=image.exam_id,
            slide_number=image.slide_number,
            state=image.state,
            from_tier=pending.from_tier or image.tier,
            to_tier=pending.to_tier,
            source=pending.source or image.object,
            target=pending.target,
            reason=pending.reason,
            sha256=image.sha256,
        )

    async def _audit(self, image: ImageRecord, pending: PendingMove, outcome: str, error: str = "") -> None:
        detail: dict[str, str | int | None] = {
            "from_tier": pending.from_tier.value if pending.from_tier else None,
            "to_tier": pending.to_tier.value if pending.to_tier else None,
            "reason": pending.reason,
        }
        if error:
            detail["error"] = error[:500]
        try:
            await self.catalog.audit(AuditEntry(
                at=db_now(), actor=self.actor, action="tier_move", outcome=outcome,  # type: ignore[arg-type]  # outcome is one of the literals
                target={"exam_id": image.exam_id, "slide_number": image.slide_number, "state": int(image.state)},
                detail=detail))
        except Exception as exc:  # noqa: BLE001 - the move is done; a lost audit line must not undo it
            log.warning("audit.write_failed", error=type(exc).__name__)
