"""Whole-slide fan-out: chunks cover the slide once, spread over the class's partitions;
progress counts each tile once whatever the redeliveries."""

from __future__ import annotations

import uuid

from compute.plan import SlideGeometry
from compute.wholeslide import ProgressTracker, chunk_requests, hr_slide_key, plan_chunks
from schemas.common import ObjectRef
from schemas.events import TileRef, UpscaleDone, UpscaleFailed, UpscaleTileResult
from schemas.topics import Priority, priority_partitions


def test_chunks_cover_every_top_level_tile_exactly_once_in_compact_blocks() -> None:
    geo = SlideGeometry(1000, 700)  # x8: 8000 x 5600 -> 32 x 22 tiles
    chunks = plan_chunks(geo, 8, chunk_tiles=32)
    tiles = [(t.col, t.row) for chunk in chunks for t in chunk]
    assert sorted(tiles) == sorted((c, r) for c in range(32) for r in range(22))
    assert all(len(chunk) <= 32 for chunk in chunks)
    assert {t.level for chunk in chunks for t in chunk} == {geo.top_level(8)}
    first = chunks[0]  # a block of neighbours (5 x 6), not a strip
    assert {t.col for t in first} == set(range(5)) and {t.row for t in first} == set(range(6))


def test_chunk_requests_round_robin_over_the_class_partitions_with_stable_ids() -> None:
    geo = SlideGeometry(300, 300)
    chunks = plan_chunks(geo, 4, chunk_tiles=4)
    job = uuid.uuid4()
    requests = chunk_requests("E1", 2, 4, Priority.DISTRIBUTION, chunks, job)
    partitions = [p for _, p in requests]
    assert set(partitions) == set(priority_partitions(Priority.DISTRIBUTION))
    assert partitions[:2] != [partitions[0]] * 2  # alternating: both workers of the class get work
    assert all(r.priority == Priority.DISTRIBUTION and r.tiles for r, _ in requests)
    again = chunk_requests("E1", 2, 4, Priority.DISTRIBUTION, chunks, job)
    assert [r.request_id for r, _ in again] == [r.request_id for r, _ in requests]  # a re-sent job is the same job
    assert hr_slide_key("E1", 2, 4) == "hr/E1/0002/x4/slide.tiff"


def _done(request_id: uuid.UUID, tiles: list[tuple[int, int]], cached: bool, remaining: int) -> UpscaleDone:
    return UpscaleDone(request_id=request_id, exam_id="E1", slide_number=1, scale=4, model="bicubic",
                       remaining=remaining,
                       results=[UpscaleTileResult(tile=TileRef(level=9, col=c, row=r), cached=cached,
                                                  object=ObjectRef(bucket="hr-cache", key=f"k/{c}_{r}"))
                                for c, r in tiles])


def test_progress_counts_each_tile_once_and_finishes_with_failures() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    tracker = ProgressTracker({a: {(9, 0, 0), (9, 1, 0)}, b: {(9, 0, 1)}})
    assert not tracker.feed(_done(uuid.uuid4(), [(5, 5)], False, 0))  # someone else's request
    assert tracker.feed(_done(a, [(0, 0)], False, 1))
    assert tracker.feed(_done(a, [(0, 0)], True, 1))  # a redelivery answered from the cache
    assert tracker.progress().done == 1 and tracker.computed == 1
    assert not tracker.finished
    tracker.feed(_done(a, [(1, 0)], True, 0))
    tracker.feed(UpscaleFailed(request_id=b, exam_id="E1", slide_number=1, reason="model error",
                               tiles=[TileRef(level=9, col=0, row=1)]))
    progress = tracker.progress()
    assert tracker.finished and (progress.done, progress.failed, progress.total) == (2, 1, 3)
    assert progress.fraction == 1.0 and progress.computed == 1
    assert tracker.models == {"bicubic"}
