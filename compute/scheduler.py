"""Priority queue of tile work: priority classes, FIFO within a class, dynamic batching.

Pure and synchronous (the engine owns the clock and the I/O). Preemption falls out of the
shape of the loop that uses it: work is taken one batch at a time, so a request of a higher
class that arrives while a lower-class request is running is served from the next batch
on, and the lower-class request's remaining tiles simply stay queued - nothing is lost,
it resumes when the higher classes are empty.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace

from compute.blocks import BlockLimits, plan_windows
from compute.plan import TileJob
from schemas.topics import PRIORITY_ORDER, Priority


@dataclass(order=True)
class QueuedTile:
    seq: int  # arrival order: FIFO within a class
    job: TileJob = field(compare=False)
    request: Hashable = field(compare=False)  # key of the request the tile belongs to
    priority: Priority = field(compare=False)
    not_before: float = field(default=0.0, compare=False)  # deferred (waiting on another worker)
    attempts: int = field(default=0, compare=False)  # reads retried after storage errors


@dataclass(frozen=True)
class Batch:
    priority: Priority
    tiles: list[QueuedTile]

    @property
    def batch_key(self) -> tuple[int, int]:
        return self.tiles[0].job.batch_key


class PriorityScheduler:
    def __init__(self, max_batch: int, blocks: BlockLimits | None = None, *,
                 interactive_max_batch: int | None = None) -> None:
        """``blocks``: take neighbouring tiles together so they share LR windows
        (``compute.blocks``); None: tiles are batched by equal model input only.
        ``interactive_max_batch``: the interactive class's batch size (default ``max_batch``)."""
        if max_batch < 1 or (interactive_max_batch is not None and interactive_max_batch < 1):
            raise ValueError(f"batch sizes must be >= 1, got {max_batch}, {interactive_max_batch}")
        self.max_batch = max_batch
        self.batch_sizes = {p: max_batch for p in PRIORITY_ORDER}
        self.batch_sizes[Priority.INTERACTIVE] = interactive_max_batch or max_batch
        self.blocks = blocks
        self._queues: dict[Priority, list[QueuedTile]] = {p: [] for p in PRIORITY_ORDER}
        self._seq = 0

    def add(self, request: Hashable, priority: Priority, jobs: Iterable[TileJob]) -> int:
        """Queue the tiles of one request behind everything of its class; returns the count."""
        queue = self._queues[priority]
        count = 0
        for job in jobs:
            self._seq += 1
            queue.append(QueuedTile(self._seq, job, request, priority))
            count += 1
        return count

    def next_batch(self, now: float) -> Batch | None:
        """Up to ``max_batch`` ready tiles of the highest class that has any.

        The oldest ready tile of that class picks the batch key (model scale and input
        size); younger ready tiles of the same class and key join it, whichever request
        they belong to. Tiles of other keys wait for a later batch, so the oldest tile
        always goes first and nothing starves within a class. With blocks, the oldest
        tile's neighbours join first (``_blocks``).
        """
        for priority in PRIORITY_ORDER:
            queue = self._queues[priority]
            ready = [index for index, item in enumerate(queue) if item.not_before <= now]
            if not ready:
                continue
            room = self.batch_sizes[priority]
            if self.blocks is None:
                taken = self._equal_inputs(queue, ready, queue[ready[0]].job.batch_key, room)
            else:
                taken = self._blocks(queue, ready, replace(self.blocks, max_tiles=min(self.blocks.max_tiles, room)),
                                     room)
            tiles = [queue[i] for i in taken]
            for i in reversed(taken):
                del queue[i]
            return Batch(priority, tiles)
        return None

    @staticmethod
    def _equal_inputs(queue: list[QueuedTile], candidates: list[int], key: tuple[int, int], room: int) -> list[int]:
        """The first ``room`` candidates whose model input equals ``key``."""
        return [i for i in candidates if queue[i].job.batch_key == key][:room]

    def _blocks(self, queue: list[QueuedTile], ready: list[int], limits: BlockLimits, batch: int) -> list[int]:
        """The oldest ready tile's block, more blocks of its image level while they fit in
        the batch, then lone tiles of other levels with the same model input.

        The oldest tile still goes first; its neighbours come along although younger
        (they cost a fraction alone), which is what makes a viewport a few windows.
        Tiles of one level are planned in FIFO order up to a bound, so planning stays cheap.
        """
        first = queue[ready[0]].job
        group = [i for i in ready if queue[i].job.block_group == first.block_group][: 4 * batch]
        items_of: dict[str, list[int]] = defaultdict(list)  # a tile asked by several requests
        for i in group:
            items_of[queue[i].job.key].append(i)
        windows = plan_windows((queue[items[0]].job for items in items_of.values()), limits)
        windows.sort(key=lambda w: min(items_of[j.key][0] for j in w.jobs))  # FIFO by oldest tile
        taken: list[int] = []
        for window in windows:
            items = [i for j in window.jobs for i in items_of[j.key]]
            if not taken or len(taken) + len(items) <= batch:
                taken += items
        room = batch - len(taken)
        if room > 0:  # fill up with tiles that have no ready neighbour to wait for
            per_group = Counter(queue[i].job.block_group for i in ready)
            chosen = set(taken)
            lone = [i for i in ready if per_group[queue[i].job.block_group] == 1 and i not in chosen]
            taken += self._equal_inputs(queue, lone, first.batch_key, room)
        return sorted(taken)

    def defer(self, items: Iterable[QueuedTile], until: float) -> None:
        """Put tiles back in their original FIFO place, not to be taken before ``until``."""
        for item in items:
            item.not_before = until
            bisect.insort(self._queues[item.priority], item)

    def requeue(self, items: Iterable[QueuedTile]) -> None:
        """Put taken tiles back, ready now, in their original FIFO place."""
        self.defer(items, 0.0)

    def drop_request(self, request: Hashable) -> list[QueuedTile]:
        """Remove every queued tile of ``request`` (e.g. its deadline passed)."""
        dropped = []
        for priority, queue in self._queues.items():
            kept = []
            for item in queue:
                (dropped if item.request == request else kept).append(item)
            self._queues[priority] = kept
        return dropped

    def drop_tiles(self, request: Hashable, tiles: set[tuple[int, int, int]]) -> list[QueuedTile]:
        """Remove the queued tiles of ``request`` at ``tiles`` (level, col, row): a cancel.
        Tiles already taken into a batch are not in a queue; they finish as usual."""
        dropped = []
        for priority, queue in self._queues.items():
            kept = []
            for item in queue:
                t = item.job.tile
                hit = item.request == request and (t.level, t.col, t.row) in tiles
                (dropped if hit else kept).append(item)
            self._queues[priority] = kept
        return dropped

    def backlog(self, priority: Priority) -> int:
        return len(self._queues[priority])

    def backlogs(self) -> dict[Priority, int]:
        return {p: len(q) for p, q in self._queues.items()}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def next_ready_at(self) -> float | None:
        """Earliest ``not_before`` among queued tiles (None when empty)."""
        times = [item.not_before for q in self._queues.values() for item in q]
        return min(times) if times else None
