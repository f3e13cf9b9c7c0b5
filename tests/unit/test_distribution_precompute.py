"""Pre-computation for a terminal without servers: the event checked against the assignment
(current, stale, forged), and the requests it sends (recording EventSink): every missing SR
tile once, in chunks, at distribution priority over that class's partitions, none for a
scanned slide. Also the manifest's reading of an hr-cache listing."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from catalog.errors import PermanentError
from distribution.hr_slides import HrSlides
from distribution.precompute import ForgedAssignment, Precomputer, verdict
from schemas.catalog import AssignmentHop, AssignmentRecord, ImageRecord
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import DistributionAssigned, Event
from schemas.layout import hr_prefix, hr_provenance_key, hr_scale_for, hr_tile_key, sr_levels, tile_grid
from schemas.topics import Priority, priority_partitions

EXAM = "E1"
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def record(**changes: Any) -> AssignmentRecord:
    base = AssignmentRecord(exam_id=EXAM, state="assigned", terminal_id="t2", task_class="gi", rule="gi",
                            slide_numbers=[1, 2], assigned_day="2026-03-01", revision=3,
                            history=[AssignmentHop(terminal_id="t1", until=NOW, reason="offline")])
    return base.model_copy(update=changes)


def event(terminal: str = "t2", revision: int = 3, slides: tuple[int, ...] = (1, 2)) -> DistributionAssigned:
    return DistributionAssigned(terminal_id=terminal, exam_id=EXAM, slide_numbers=list(slides),
                                priority=Priority.DISTRIBUTION, policy="gi", assignment_revision=revision)


def test_the_current_holder_at_or_before_the_records_revision_is_current() -> None:
    assert verdict(event(revision=3), record()) == "current"
    assert verdict(event(revision=1, slides=(2,)), record()) == "current"


def test_an_earlier_holder_or_a_finished_exam_is_stale() -> None:
    assert verdict(event("t1", revision=2), record()) == "stale"
    assert verdict(event(revision=2), record(state="done")) == "stale"
    assert verdict(event("t1", revision=2), record(state="waiting", terminal_id=None, assigned_day=None)) == "stale"


@pytest.mark.parametrize(("evt", "rec", "why"), [
    (event(), None, "no assignment"),
    (event("t9", revision=2), record(), "does not hold"),  # never held it
    (event(revision=4), record(), "only at revision 3"),  # from the future
    (event(slides=(1, 7)), record(), "slides that are not"),
    (event("t1", revision=3), record(), "does not hold"),  # an earlier holder at the current revision
])
def test_anything_else_is_forged_and_permanent(evt: DistributionAssigned, rec: AssignmentRecord | None,
                                               why: str) -> None:
    with pytest.raises(ForgedAssignment, match=why) as caught:
        verdict(evt, rec)
    assert isinstance(caught.value, PermanentError)  # the agent dead-letters it


# --- requests, with fakes of the catalog and the store ------------------------------------

SIZE = 600  # LR px, 5x -> x8 at 40x


class FakeCatalog:
    async def get_image(self, exam_id: str, slide_number: int, state: Any) -> ImageRecord:
        ref = ObjectRef(bucket="recent", key=f"lr/{exam_id}/{slide_number}.tiff")
        return ImageRecord(exam_id=exam_id, patient_id="P1", slide_number=slide_number, state=ImageState.LR,
                           tier=StorageTier.RECENT, object=ref, acquired_at=NOW, width=SIZE, height=SIZE,
                           magnification=5.0)


class FakeStore:
    def __init__(self, keys: set[str]) -> None:
        self.keys = keys

    def bucket(self, tier: Any) -> str:
        return "hr-cache"

    def ref(self, tier: Any, key: str) -> ObjectRef:
        return ObjectRef(bucket="hr-cache", key=key)

    async def exists(self, ref: ObjectRef) -> bool:
        return ref.key in self.keys

    async def list_prefix(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        return [(k, 1) for k in sorted(self.keys) if k.startswith(prefix)]


class FakeAssignments:
    def __init__(self, rec: AssignmentRecord) -> None:
        self.rec = rec

    async def get(self, exam_id: str) -> AssignmentRecord:
        return self.rec


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[Event, int | None]] = []

    async def __call__(self, evt: Event, *, partition: int | None = None) -> None:
        self.sent.append((evt, partition))


def geometry() -> tuple[int, int]:
    scale = hr_scale_for(5.0, 40.0)
    levels = sr_levels(SIZE, SIZE, scale)
    return scale, sum(math.prod(tile_grid(SIZE * scale, SIZE * scale, lv)) for lv in levels)


async def test_missing_tiles_are_requested_in_chunks_at_distribution_priority() -> None:
    scale, expected = geometry()
    top = sr_levels(SIZE, SIZE, scale)[-1]
    present = {hr_tile_key(EXAM, 1, scale, top, c, 0) for c in range(5)}
    junk = {f"{hr_prefix(EXAM, 1, scale)}consistency/a.json", f"{hr_prefix(EXAM, 1, scale)}{top}/999_999.png"}
    scanned = {hr_provenance_key(EXAM, 2, scale)}  # slide 2 was scanned at 40x
    sink = Recorder()
    slides = HrSlides(FakeCatalog(), FakeStore(present | junk | scanned), 40.0)  # type: ignore[arg-type]
    done = await Precomputer(FakeAssignments(record()), slides, sink, chunk_tiles=16)(event())  # type: ignore[arg-type]

    missing = expected - len(present)
    assert (done.tiles, done.scanned_slides, done.stale) == (missing, 1, False)
    assert done.requests == len(sink.sent) == math.ceil(missing / 16)
    asked = [(t.level, t.col, t.row) for request, _ in sink.sent for t in request.tiles or ()]  # type: ignore[attr-defined]
    assert len(asked) == len(set(asked)) == missing
    assert not {(top, c, 0) for c in range(5)} & set(asked)
    partitions = priority_partitions(Priority.DISTRIBUTION)
    for request, partition in sink.sent:
        assert request.priority is Priority.DISTRIBUTION and request.slide_number == 1  # type: ignore[attr-defined]
        assert request.requested_by == "t2" and request.deadline is None and request.scale == scale  # type: ignore[attr-defined]
        assert partition in partitions
    assert {p for _, p in sink.sent} == set(partitions)  # round-robin over the class's partitions


async def test_a_redelivered_event_asks_under_the_same_request_ids_and_a_stale_one_asks_nothing() -> None:
    slides = HrSlides(FakeCatalog(), FakeStore(set()), 40.0)  # type: ignore[arg-type]
    first, second = Recorder(), Recorder()
    await Precomputer(FakeAssignments(record()), slides, first, 64)(event(slides=(1,)))  # type: ignore[arg-type]
    await Precomputer(FakeAssignments(record()), slides, second, 64)(event(slides=(1,)))  # type: ignore[arg-type]
    assert [r.request_id for r, _ in first.sent] == [r.request_id for r, _ in second.sent]  # type: ignore[attr-defined]
    stale = Recorder()
    done = await Precomputer(FakeAssignments(record()), slides, stale, 64)(event("t1", revision=2))  # type: ignore[arg-type]
    assert done.stale and stale.sent == []


async def test_present_counts_only_tile_names_inside_the_pyramid() -> None:
    scale, expected = geometry()
    top = sr_levels(SIZE, SIZE, scale)[-1]
    prefix = hr_prefix(EXAM, 1, scale)
    keys = {hr_tile_key(EXAM, 1, scale, top, 0, 0), hr_tile_key(EXAM, 1, scale, top - 1, 1, 1),
            f"{prefix}{top}/0_0.png.tmp", f"{prefix}{top}/9999_0.png", f"{prefix}scanned.json",
            f"{prefix}1/0_0.png", f"{prefix}x/0_0.png", hr_tile_key(EXAM, 1, 4, top, 0, 0)}
    slides = HrSlides(FakeCatalog(), FakeStore(keys), 40.0)  # type: ignore[arg-type]
    slide = await slides.levels(EXAM, 1)
    assert slide is not None and slide.expected == expected
    assert await slides.present(slide) == {(top, 0, 0), (top - 1, 1, 1)}


async def test_a_top_up_asks_only_for_what_is_still_missing_under_new_request_ids() -> None:
    scale, expected = geometry()
    top = sr_levels(SIZE, SIZE, scale)[-1]
    present = {hr_tile_key(EXAM, 1, scale, top, c, 0) for c in range(3)}
    slides = HrSlides(FakeCatalog(), FakeStore(present), 40.0)  # type: ignore[arg-type]
    rec = record(slide_numbers=[1])
    first, again = Recorder(), Recorder()
    precomputer = Precomputer(FakeAssignments(rec), slides, first, 64)  # type: ignore[arg-type]
    await precomputer(event(slides=(1,)))
    assert await precomputer.missing(rec) == (3, expected)
    topped = await Precomputer(FakeAssignments(rec), slides, again, 64).top_up(rec, 1)  # type: ignore[arg-type]
    assert topped.tiles == expected - 3
    asked = {(t.level, t.col, t.row) for r, _ in again.sent for t in r.tiles or ()}  # type: ignore[attr-defined]
    assert not {(top, c, 0) for c in range(3)} & asked
    assert not {r.request_id for r, _ in first.sent} & {r.request_id for r, _ in again.sent}  # type: ignore[attr-defined]
