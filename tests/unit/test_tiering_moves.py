"""The crash-safe move protocol as a state machine: resuming from any marker completes the
move, and the source is only deleted after the catalog points at a verified copy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog import moves
from catalog.moves import Action
from schemas.catalog import ImageRecord, PendingMove
from schemas.common import ImageState, ObjectRef, StorageTier

SRC = ObjectRef(bucket="slidestream-recent", key="lr/E1/0001.tiff")
DST = ObjectRef(bucket="slidestream-mid", key="lr/E1/0001.tiff")
MIRROR = ObjectRef(bucket="slidestream-mirror", key="lr/E1/0001.tiff")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
STEPS = ["copying", "copied", "verified", "catalog_updated", "deleting"]


def pending(step: str, to_tier: StorageTier | None = StorageTier.MID) -> PendingMove:
    return PendingMove(to_tier=to_tier, target=DST if to_tier else None, step=step, reason="discharge",
                       from_tier=StorageTier.RECENT, source=SRC, started_at=T0)


def image() -> ImageRecord:
    return ImageRecord(exam_id="E1", patient_id="P1", slide_number=1, state=ImageState.LR,
                       tier=StorageTier.RECENT, object=SRC, mirror=MIRROR, acquired_at=T0, sha256="a" * 64)


def simulate(start_step: str, crash_after: int | None) -> tuple[dict, list[Action]]:
    """Run the plan from ``start_step`` over a model of storage and catalog, crashing after
    ``crash_after`` actions; then resume from the last written marker until done."""
    world = {"source": True, "target": False, "verified": False, "catalog": "source", "marker": start_step,
             "published": 0}
    if start_step != "copying":
        world["target"] = True
    if start_step in ("verified", "catalog_updated", "deleting"):
        world["verified"] = True
    if start_step in ("catalog_updated", "deleting"):
        world["catalog"] = "target"
    if start_step == "deleting":
        world["source"] = False
    done: list[Action] = []
    limit = crash_after
    while world["marker"] is not None:
        for action in moves.plan(pending(world["marker"]), same_location=False):
            if limit is not None and limit == 0:
                limit = None  # crash: stop here, resume from the marker
                break
            if limit is not None:
                limit -= 1
            done.append(action)
            if action is Action.COPY:
                world["target"] = True
            elif action is Action.VERIFY:
                assert world["target"]
                world["verified"] = True
            elif action is Action.UPDATE_CATALOG:
                assert world["verified"], "catalog updated before the copy was verified"
                world["catalog"] = "target"
            elif action is Action.DELETE_SOURCE:
                assert world["catalog"] == "target", "source deleted while the catalog still names it"
                world["source"] = False
            elif action is Action.PUBLISH:
                world["published"] += 1
            elif action is Action.CLEAR:
                world["marker"] = None
                continue
            step = moves.STEP_AFTER[action]
            if step is not None:
                world["marker"] = step
        else:
            continue
    return world, done


@given(st.sampled_from(STEPS), st.none() | st.integers(min_value=0, max_value=6))
def test_any_crash_and_resume_ends_with_exactly_one_verified_copy(start: str, crash_after: int | None) -> None:
    world, _ = simulate(start, crash_after)
    assert world["catalog"] == "target" and world["target"] and world["verified"]
    assert world["source"] is False
    assert world["published"] >= 1


def test_a_fresh_move_runs_every_action_once_in_order() -> None:
    _, done = simulate("copying", None)
    assert done == list(moves.RELOCATE)


def test_resume_repeats_at_most_the_action_in_flight() -> None:
    assert moves.plan(pending("copied"), same_location=False)[0] is Action.VERIFY
    assert moves.plan(pending("verified"), same_location=False)[0] is Action.UPDATE_CATALOG
    assert moves.plan(pending("catalog_updated"), same_location=False) == (
        Action.DELETE_SOURCE, Action.PUBLISH, Action.CLEAR)
    assert moves.plan(pending("deleting"), same_location=False) == (Action.PUBLISH, Action.CLEAR)


def test_tiers_sharing_a_bucket_never_delete_the_only_copy() -> None:
    for step in STEPS:
        assert Action.DELETE_SOURCE not in moves.plan(pending(step), same_location=True)
        assert Action.COPY not in moves.plan(pending(step), same_location=True)


def test_drop_deletes_objects_before_the_catalog_row() -> None:
    plan = moves.plan(pending("deleting", to_tier=None), same_location=False)
    assert plan.index(Action.DELETE_OBJECTS) < plan.index(Action.DELETE_RECORD)
    assert plan.index(Action.PUBLISH) < plan.index(Action.DELETE_RECORD)


@pytest.mark.parametrize("step,allowed", [("copying", True), ("copied", True), ("verified", True),
                                          ("catalog_updated", False), ("deleting", False)])
def test_abort_only_before_the_catalog_update(step: str, allowed: bool) -> None:
    assert moves.may_abort(pending(step)) is allowed
    assert moves.may_abort(pending("deleting", to_tier=None)) is False


def test_copy_falls_back_to_the_mirror() -> None:
    assert moves.copy_sources(image(), pending("copying")) == [SRC, MIRROR]


def test_event_id_is_stable_per_move_and_differs_between_moves() -> None:
    first = moves.move_event_id(image(), pending("copying"))
    assert first == moves.move_event_id(image(), pending("catalog_updated"))
    later = pending("copying").model_copy(update={"started_at": datetime(2026, 3, 2, tzinfo=UTC)})
    assert moves.move_event_id(image(), later) != first
