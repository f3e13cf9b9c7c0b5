"""Priority scheduler: classes, FIFO, batching across requests, preemption without loss."""

from __future__ import annotations

from compute.plan import SlideGeometry, TileJob, plan_tile
from compute.scheduler import PriorityScheduler
from schemas.events import TileRef
from schemas.topics import Priority

GEO = SlideGeometry(512, 512)  # x8: 4096 px, top level 12 (x8), 11 (x4), 10 (x2)


def jobs(count: int, level: int = 12, scale: int = 8, start: int = 0) -> list[TileJob]:
    cols, _ = GEO.grid(scale, level)
    return [plan_tile(GEO, "E1", 1, scale, TileRef(level=level, col=(start + i) % cols, row=(start + i) // cols), 2)
            for i in range(count)]


def drain(s: PriorityScheduler) -> list[tuple[Priority, list[str]]]:
    out = []
    while (batch := s.next_batch(now=0.0)) is not None:
        out.append((batch.priority, [str(t.request) for t in batch.tiles]))
    return out


def test_higher_classes_first_and_fifo_within_a_class() -> None:
    s = PriorityScheduler(max_batch=2)
    s.add("bg1", Priority.BACKGROUND, jobs(2))
    s.add("dist", Priority.DISTRIBUTION, jobs(1))
    s.add("int1", Priority.INTERACTIVE, jobs(1))
    s.add("bg2", Priority.BACKGROUND, jobs(1))
    s.add("int2", Priority.INTERACTIVE, jobs(2))
    assert drain(s) == [
        (Priority.INTERACTIVE, ["int1", "int2"]),
        (Priority.INTERACTIVE, ["int2"]),
        (Priority.DISTRIBUTION, ["dist"]),
        (Priority.BACKGROUND, ["bg1", "bg1"]),
        (Priority.BACKGROUND, ["bg2"]),
    ]
    assert len(s) == 0


def test_batches_join_requests_with_the_same_model_input_only() -> None:
    s = PriorityScheduler(max_batch=8)
    s.add("a", Priority.BACKGROUND, jobs(2, level=12))  # x8 windows
    s.add("b", Priority.BACKGROUND, jobs(2, level=11))  # x4 windows: another batch key
    s.add("c", Priority.BACKGROUND, jobs(3, level=12))
    first = s.next_batch(0.0)
    assert first is not None
    assert [t.request for t in first.tiles] == ["a", "a", "c", "c", "c"]
    assert first.batch_key == (8, 256 // 8 + 4)
    second = s.next_batch(0.0)
    assert second is not None and [t.request for t in second.tiles] == ["b", "b"]


def test_preemption_between_batches_loses_nothing_and_resumes_in_order() -> None:
    s = PriorityScheduler(max_batch=3)
    background = jobs(10)
    s.add("bg", Priority.BACKGROUND, background)
    done: list[TileJob] = []
    batch = s.next_batch(0.0)
    assert batch is not None
    done += [t.job for t in batch.tiles]
    s.add("int", Priority.INTERACTIVE, jobs(2, start=40))  # arrives while bg runs
    batch = s.next_batch(0.0)
    assert batch is not None and batch.priority is Priority.INTERACTIVE
    while (batch := s.next_batch(0.0)) is not None:
        assert batch.priority is Priority.BACKGROUND
        done += [t.job for t in batch.tiles]
    assert done == background  # every background tile once, in arrival order


def test_deferred_tiles_wait_and_keep_their_place() -> None:
    s = PriorityScheduler(max_batch=2)
    s.add("r", Priority.DISTRIBUTION, jobs(4))
    first = s.next_batch(0.0)
    assert first is not None
    s.defer(first.tiles, until=5.0)
    waiting = s.next_batch(now=1.0)
    assert waiting is not None and [t.job.tile.col for t in waiting.tiles] == [2, 3]
    assert s.next_batch(now=1.0) is None
    assert s.next_ready_at() == 5.0
    later = s.next_batch(now=5.0)
    assert later is not None and [t.job.tile.col for t in later.tiles] == [0, 1]


def test_a_waiting_higher_class_does_not_block_lower_ready_work() -> None:
    s = PriorityScheduler(max_batch=4)
    s.add("int", Priority.INTERACTIVE, jobs(1))
    taken = s.next_batch(0.0)
    assert taken is not None
    s.defer(taken.tiles, until=10.0)  # another worker computes it
    s.add("bg", Priority.BACKGROUND, jobs(1, start=5))
    batch = s.next_batch(0.0)
    assert batch is not None and batch.priority is Priority.BACKGROUND


def test_drop_request_removes_only_its_tiles() -> None:
    s = PriorityScheduler(max_batch=8)
    s.add("a", Priority.BACKGROUND, jobs(3))
    s.add("b", Priority.BACKGROUND, jobs(2, start=10))
    assert len(s.drop_request("a")) == 3
    assert s.backlogs() == {Priority.INTERACTIVE: 0, Priority.DISTRIBUTION: 0, Priority.BACKGROUND: 2}
    assert drain(s) == [(Priority.BACKGROUND, ["b", "b"])]


def test_interactive_batches_may_be_larger_than_the_others() -> None:
    """A viewport (40 tiles) is one interactive batch; background keeps the smaller batch,
    which is the preemption granularity."""
    from compute.blocks import BlockLimits

    for blocks in (None, BlockLimits(max_tiles=48, max_bytes=1 << 40, window_bytes=lambda h, w, s: h * w)):
        s = PriorityScheduler(max_batch=24, blocks=blocks, interactive_max_batch=48)
        s.add("viewport", Priority.INTERACTIVE, jobs(40))
        s.add("export", Priority.BACKGROUND, jobs(40, start=40))
        sizes = [(batch.priority, len(batch.tiles)) for batch in iter(lambda s=s: s.next_batch(now=0.0), None)]
        assert sizes[0] == (Priority.INTERACTIVE, 40), blocks
        assert all(n <= 24 for p, n in sizes if p is Priority.BACKGROUND) and sum(n for _, n in sizes) == 80
