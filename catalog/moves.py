"""The crash-safe tier move as a pure state machine.

A move of an LR image from tier A to tier B runs these actions, and writes a marker
(``ImageRecord.pending_move.step``) into the image's catalog document after each one,
so a worker that dies anywhere can be resumed by any other worker:

    plan            marker "copying"           (the image is claimed: no second move starts)
    COPY            marker "copied"            (target written, from the source or the mirror)
    VERIFY          marker "verified"          (target's SHA-256 equals the catalog's)
    UPDATE_CATALOG  tier/object := B, marker "catalog_updated"   (one atomic document update)
    DELETE_SOURCE   marker "deleting"          (source deleted; only now, never earlier)
    PUBLISH         tier.moved (deterministic event id, so a repeat is recognisable)
    CLEAR           marker removed

Every action is idempotent (copying the same bytes again, deleting an absent object,
re-publishing the same event id), so resuming from the last written marker repeats at
most one action. The source is deleted only after the catalog points at a verified copy,
so at every instant the catalog names an object that exists with its checksum, and after
the move exactly one tier holds the image.

Dropping an HR tile set from the hr-cache (discharge, eviction) is shorter: plan with
marker "deleting", DELETE_OBJECTS, PUBLISH, DELETE_RECORD.
"""

from __future__ import annotations

import uuid
from enum import Enum

from schemas.catalog import ImageRecord, PendingMove
from schemas.common import ObjectRef

MoveStep = str  # one of PendingMove.step's literals


class Action(str, Enum):
    COPY = "copy"
    VERIFY = "verify"
    UPDATE_CATALOG = "update_catalog"
    DELETE_SOURCE = "delete_source"
    PUBLISH = "publish"
    CLEAR = "clear"
    DELETE_OBJECTS = "delete_objects"
    DELETE_RECORD = "delete_record"


RELOCATE: tuple[Action, ...] = (
    Action.COPY,
    Action.VERIFY,
    Action.UPDATE_CATALOG,
    Action.DELETE_SOURCE,
    Action.PUBLISH,
    Action.CLEAR,
)
# Tiers configured onto the same bucket: nothing to copy or delete, only the catalog changes.
RELABEL: tuple[Action, ...] = (Action.UPDATE_CATALOG, Action.PUBLISH, Action.CLEAR)
DROP: tuple[Action, ...] = (Action.DELETE_OBJECTS, Action.PUBLISH, Action.DELETE_RECORD)

# Marker written once an action has completed (None: no marker write of its own).
STEP_AFTER: dict[Action, MoveStep | None] = {
    Action.COPY: "copied",
    Action.VERIFY: "verified",
    Action.UPDATE_CATALOG: "catalog_updated",
    Action.DELETE_SOURCE: "deleting",
    Action.PUBLISH: None,
    Action.CLEAR: None,
    Action.DELETE_OBJECTS: None,
    Action.DELETE_RECORD: None,
}

# Name of the fault point after each action (settings.tiering.fault_at), for crash tests.
FAULT_AFTER: dict[Action, str] = {
    Action.COPY: "after_copy",
    Action.VERIFY: "after_verify",
    Action.UPDATE_CATALOG: "after_catalog_update",
    Action.DELETE_SOURCE: "after_delete",
    Action.DELETE_OBJECTS: "after_delete",
    Action.PUBLISH: "after_publish",
}

INITIAL_STEP_RELOCATE: MoveStep = "copying"
INITIAL_STEP_DROP: MoveStep = "deleting"


def plan(pending: PendingMove, *, same_location: bool) -> tuple[Action, ...]:
    """The actions still to run for a move whose last written marker is ``pending.step``."""
    if pending.to_tier is None:
        return DROP
    if same_location:
        if pending.step == "catalog_updated" or pending.step == "deleting":
            return (Action.PUBLISH, Action.CLEAR)
        return RELABEL
    start = {
        "copying": Action.COPY,
        "copied": Action.VERIFY,
        "verified": Action.UPDATE_CATALOG,
        "catalog_updated": Action.DELETE_SOURCE,
        "deleting": Action.PUBLISH,
    }[pending.step]
    return RELOCATE[RELOCATE.index(start):]


def may_abort(pending: PendingMove) -> bool:
    """Before the catalog update the source is untouched: a failed move can be undone by
    deleting the partial target and clearing the marker. Afterwards only forward is safe."""
    return pending.to_tier is not None and pending.step in ("copying", "copied", "verified")


def copy_sources(image: ImageRecord, pending: PendingMove) -> list[ObjectRef]:
    """Where to copy from, in order: the tier copy, then the mirror (if the tier copy is
    missing or corrupt the mirror restores it)."""
    sources = [pending.source or image.object]
    if image.mirror is not None and image.mirror not in sources:
        sources.append(image.mirror)
    return sources


_MOVE_NAMESPACE = uuid.UUID("6f1c8f3e-8a57-4d8e-9d59-3d7c6b0a2f11")


def move_event_id(image: ImageRecord, pending: PendingMove) -> uuid.UUID:
    """A stable id for the ``tier.moved`` event of one move, the same after any resume, so
    consumers can drop a repeat published by a worker that died after publishing."""
    to = pending.to_tier.value if pending.to_tier is not None else "-"
    source = pending.from_tier.value if pending.from_tier is not None else "-"
    name = (f"{image.exam_id}/{image.slide_number}/{int(image.state)}/{source}->{to}/"
            f"{pending.reason}/{pending.started_at.isoformat()}")
    return uuid.uuid5(_MOVE_NAMESPACE, name)
