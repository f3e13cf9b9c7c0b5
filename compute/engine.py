"""The compute engine: requests in, HR tiles and result events out. No Kafka in here.

One loop takes one batch at a time from the priority scheduler, so higher-priority work
preempts lower-priority work at batch (tile) granularity. With ``EngineConfig.blocks`` a
batch is the oldest tile's neighbours, computed as a few large LR windows (``compute.blocks``).
The engine only orchestrates:

* ``compute.requests``      - the requests in progress (pending tiles, callbacks, sources);
* ``compute.tile_pipeline`` - a batch through the hr-cache, the leases and the model;
* ``compute.answers``       - one ``upscale.done`` per request in the batch, with timings, and
  ``upscale.failed`` for the tiles that failed (unreadable LR, model error).

A request is finished when each of its tiles is done or failed; ``on_finished`` callbacks
then run (the agent acknowledges the Kafka message there: at-least-once).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import structlog

from compute.answers import batch_answers
from compute.blocks import BlockLimits
from compute.plan import InvalidRequest, plan_request
from compute.requests import EarlyCancels, RequestBook, TrackedRequest
from compute.scheduler import Batch, PriorityScheduler, QueuedTile
from compute.slides import LrSlide, SlideRepository, UnknownSlide
from compute.tile_cache import TileCache
from compute.tile_leases import LeaseStore
from compute.tile_pipeline import DEFAULT_CALL_BYTES, PipelineResult, TilePipeline
from compute.upscaler import Upscaler, method_name, window_bytes, window_margin
from core.settings import CONSISTENCY_THRESHOLD_DB
from schemas.events import Event, TileRef, UpscaleCancelled, UpscaleFailed, UpscaleRequested, UpscaleTileResult
from schemas.topics import Priority
from slide_io import SlideError

log = structlog.get_logger(__name__)

Publish = Callable[[Event], Awaitable[None]]
BacklogListener = Callable[[dict[Priority, int]], None]


CANCELLED_REASON = "cancelled by the requester before the tiles were computed"


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 8
    # Interactive batches may be larger (None: max_batch): a pathologist waits for the whole
    # viewport anyway, and a larger batch is fewer, more efficient windows. Preemption only
    # concerns lower classes, whose batches stay at max_batch.
    interactive_max_batch: int | None = None
    lease_ttl_s: float = 120.0  # far above one batch; a dead worker's tiles free up after this
    lease_poll_s: float = 0.25  # how soon to look again at a tile another worker computes
    max_tiles_per_request: int = 512
    purge_interval_s: float = 300.0  # sweep of expired leases left by dead workers
    open_attempts: int = 3  # storage errors opening a slide are retried before failing
    read_retries: int = 2  # storage errors reading a tile are retried before failing it
    error_backoff_s: float = 1.0  # a batch that failed on infrastructure is retried after this
    # Neighbouring tiles of a batch share one LR window and one context margin
    # (compute.blocks): the model's work per tile drops ~3x at x8. Off here so a bare config
    # keeps one window per tile; compute.runtime turns it on for the service.
    blocks: bool = False
    # Estimated model memory (Upscaler.window_bytes) of one window and of one model call:
    # bounds the blocks and how many equal windows run together (~0.8 of it real on CPU).
    max_window_bytes: int = DEFAULT_CALL_BYTES
    # Cap on the LR context per side. None: the upscaler's own measured cap (``margin_cap``,
    # from the model registry), else its declared margin (its receptive field: tiles are
    # bit-exact however they are grouped). A number overrides both (core.settings).
    max_margin: int | None = None
    # Computed tiles below this consistency with the LR are counted in upscale.done's summary.
    consistency_threshold_db: float = CONSISTENCY_THRESHOLD_DB


@dataclass
class EngineStats:
    batches: int = 0
    tiles_computed: int = 0
    tiles_cached: int = 0
    tiles_failed: int = 0
    tiles_deferred: int = 0
    output_pixels: int = 0
    compute_s: float = 0.0
    busy_s: float = 0.0
    preemptions: int = 0
    requests_finished: int = 0
    requests_failed: int = 0
    tiles_cancelled: int = 0


def block_limits(config: EngineConfig, upscaler: Upscaler) -> BlockLimits:
    """A window holds at most one batch of tiles (answers and preemption stay per batch)
    within the memory budget."""
    return BlockLimits(max_tiles=max(config.max_batch, config.interactive_max_batch or 0),
                       max_bytes=config.max_window_bytes,
                       window_bytes=partial(window_bytes, upscaler))


class ComputeEngine:
    def __init__(
        self,
        *,
        upscaler: Upscaler,
        slides: SlideRepository,
        cache: TileCache,
        leases: LeaseStore,
        publish: Publish,
        config: EngineConfig = EngineConfig(),
        worker_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_backlog: BacklogListener | None = None,
    ) -> None:
        self.upscaler = upscaler
        self.slides = slides
        self.cache = cache
        self.leases = leases
        self.publish = publish
        self.config = config
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        self.on_backlog = on_backlog
        blocks = block_limits(config, upscaler) if config.blocks else None
        self.scheduler = PriorityScheduler(config.max_batch, blocks,
                                           interactive_max_batch=config.interactive_max_batch)
        self.stats = EngineStats()
        self.pipeline = TilePipeline(upscaler=upscaler, cache=cache, leases=leases, worker_id=self.worker_id,
                                     lease_ttl_s=config.lease_ttl_s, read_retries=config.read_retries, clock=clock,
                                     blocks=blocks, max_call_bytes=config.max_window_bytes)
        self._requests = RequestBook()
        self._early_cancels = EarlyCancels()
        self._wake = asyncio.Event()
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_purge = clock()

    # --- intake -------------------------------------------------------------------------

    async def submit(self, request: UpscaleRequested, on_finished: Callable[[], None] | None = None,
                     source: Hashable | None = None) -> None:
        """Queue ``request``. Unknown slides and impossible tiles are answered with
        ``upscale.failed`` at once. A request already in progress here (a redelivery)
        is not queued twice; its callback joins the running one. ``source`` names where
        the request came from (its partition), for ``drop_sources``."""
        key = request.request_id
        if self._requests.join(key, on_finished, source):
            return
        callbacks = [on_finished] if on_finished is not None else []
        if self._past_deadline(request):
            await self._reject(request, "deadline passed before the request was processed", callbacks)
            return
        try:
            slide = await self._open_slide(request)
            jobs = plan_request(request, slide.geometry, self._margin_for,
                                self.config.max_tiles_per_request)
        except (UnknownSlide, InvalidRequest, SlideError) as exc:
            await self._reject(request, str(exc), callbacks)
            return
        cancelled = self._early_cancels.take(key, self.clock())
        if cancelled:
            gone = [j.tile for j in jobs if (j.tile.level, j.tile.col, j.tile.row) in cancelled]
            jobs = [j for j in jobs if (j.tile.level, j.tile.col, j.tile.row) not in cancelled]
            if gone:
                self.stats.tiles_cancelled += len(gone)
                await self._reject(request, CANCELLED_REASON, [] if jobs else callbacks, tiles=gone,
                                   remaining=len(jobs), cancelled=True)
            if not jobs:
                return
        state = TrackedRequest(request, Priority(request.priority), self.clock(), slide, {j.key for j in jobs},
                               callbacks, {source} if source is not None else set())
        self._requests.add(key, state)
        self.scheduler.add(key, state.priority, jobs)
        log.info("upscale.queued", request_id=str(key), exam_id=request.exam_id,
                 slide_number=request.slide_number, priority=state.priority.value, tiles=len(jobs))
        self._notify_backlog()
        self._idle.clear()
        self._wake.set()

    def _margin_for(self, scale: int) -> int:
        return window_margin(self.upscaler, scale, self.config.max_margin)

    async def _open_slide(self, request: UpscaleRequested) -> LrSlide:
        delay = 0.5
        for attempt in range(1, self.config.open_attempts + 1):
            try:
                return await self.slides.open(request.exam_id, request.slide_number)
            except (UnknownSlide, SlideError):
                raise
            except Exception as exc:  # noqa: BLE001 - storage or catalog unreachable: retry
                if attempt == self.config.open_attempts:
                    raise SlideError(f"LR slide could not be opened ({type(exc).__name__}: {exc})") from exc
                log.warning("upscale.open_retry", request_id=str(request.request_id), attempt=attempt,
                            error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _reject(self, request: UpscaleRequested, reason: str, callbacks: list[Callable[[], None]],
                      tiles: list[TileRef] | None = None, *, remaining: int = 0, cancelled: bool = False) -> None:
        await self.publish(UpscaleFailed(request_id=request.request_id, exam_id=request.exam_id,
                                         slide_number=request.slide_number, reason=reason, tiles=tiles,
                                         remaining=remaining, cancelled=cancelled))
        if cancelled:
            log.info("upscale.cancelled", request_id=str(request.request_id), tiles=len(tiles or ()),
                     remaining=remaining)
        else:
            log.warning("upscale.rejected", request_id=str(request.request_id), reason=reason)
            self.stats.requests_failed += 1
        for callback in callbacks:
            callback()

    async def cancel(self, event: UpscaleCancelled) -> int:
        """Drop the tiles of ``event`` that are still queued here and answer them as
        cancelled; tiles in a running batch finish. A cancel for a request not (yet) seen
        is remembered for a while. Returns the number of tiles dropped."""
        key = event.request_id
        tiles = {(t.level, t.col, t.row) for t in event.tiles}
        state = self._requests.get(key)
        if state is None:
            self._early_cancels.note(key, tiles, self.clock())
            return 0
        dropped = self.scheduler.drop_tiles(key, tiles)
        dropped = [d for d in dropped if d.job.key in state.pending]
        if not dropped:
            return 0
        state.pending -= {d.job.key for d in dropped}
        self.stats.tiles_cancelled += len(dropped)
        finished = not state.pending
        if finished:
            self._requests.pop(key)
            self.stats.requests_finished += 1
        await self._reject(state.request, CANCELLED_REASON, state.callbacks if finished else [],
                           tiles=[d.job.tile for d in dropped], remaining=len(state.pending), cancelled=True)
        self._notify_backlog()
        self._wake.set()  # the loop notices an emptied queue (idle)
        return len(dropped)

    def _past_deadline(self, request: UpscaleRequested) -> bool:
        return request.deadline is not None and request.deadline <= datetime.now(UTC)

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Process batches until ``stop()``."""
        self._stopping = False
        while not self._stopping:
            await self._expire_deadlines()
            await self._maybe_purge_leases()
            batch = self.scheduler.next_batch(self.clock())
            if batch is None:
                if not self.scheduler:
                    await self.pipeline.drain()  # idle means no lease of ours is left either
                    self._idle.set()
                await self._sleep_until_work()
                continue
            started = self.clock()
            try:
                await self.process(batch)
            except Exception as exc:  # noqa: BLE001 - catalog/storage/broker hiccup: retry the batch
                log.error("upscale.batch_error", error=f"{type(exc).__name__}: {exc}", worker=self.worker_id)
                self._requeue_unanswered(batch, delay=self.config.error_backoff_s)
            self.stats.busy_s += self.clock() - started
            self._notify_backlog()
        await self.pipeline.drain()

    def _requeue_unanswered(self, batch: Batch, delay: float) -> None:
        """Tiles of a failed batch whose requests still wait for them go back in the queue."""
        again = [item for item in batch.tiles if self._requests.waiting_for(item.request, item.job.key)]
        self.scheduler.defer(again, self.clock() + delay)

    def known_sources(self) -> set[Hashable]:
        return self._requests.known_sources()

    def drop_sources(self, revoked: set[Hashable]) -> int:
        """Forget requests whose every source was revoked (another worker owns those
        partitions now and will get the messages again, since we never acknowledged them).
        Their queued tiles go; tiles already computed stay in the hr-cache for the new
        owner. Returns the number of requests dropped."""
        gone = self._requests.revoke(revoked)
        for key in gone:
            self.scheduler.drop_request(key)
        dropped = len(gone)
        if dropped:
            log.info("upscale.requests_handed_over", count=dropped, worker=self.worker_id)
            self._notify_backlog()
            self._wake.set()
        return dropped

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def wait_idle(self) -> None:
        """Until nothing is queued or running (tests, bench)."""
        await self._idle.wait()

    @property
    def active_requests(self) -> int:
        return len(self._requests)

    def in_progress(self, request_id: Hashable) -> bool:
        """``request_id`` is queued or being computed here (not yet fully answered)."""
        return request_id in self._requests

    async def _sleep_until_work(self) -> None:
        ready_at = self.scheduler.next_ready_at()
        timeout = None if ready_at is None else max(0.0, ready_at - self.clock())
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    def _notify_backlog(self) -> None:
        if self.on_backlog is not None:
            self.on_backlog(self.scheduler.backlogs())

    # --- one batch ----------------------------------------------------------------------

    async def process(self, batch: Batch) -> None:
        items = [item for item in batch.tiles if item.request in self._requests]
        if not items:
            return
        if self._requests.lower_priority_started(batch.priority):
            self.stats.preemptions += 1
        t_start = self.clock()
        for item in items:
            self._requests[item.request].started = True
        by_key: dict[str, list[QueuedTile]] = defaultdict(list)
        for item in items:  # one tile asked by several requests in this batch: compute once
            by_key[item.job.key].append(item)

        result = await self.pipeline.run(by_key, lambda item: self._requests[item.request].slide)

        if result.deferred:
            self.stats.tiles_deferred += len({item.job.key for item in result.deferred})
            self.scheduler.defer(result.deferred, self.clock() + self.config.lease_poll_s)
        if result.retry:
            await self._reopen_for_retry(result.retry)
        counts = self._count(result)
        self.stats.batches += 1
        await self._report(by_key, result, t_start, counts)

    def _count(self, result: PipelineResult) -> dict[str, int]:
        """Add the batch's outcomes to the stats; the batch's own counts."""
        counts = {"computed": 0, "cached": 0, "failed": 0}
        for key, outcome in result.outcomes.items():
            if outcome.error is not None:
                counts["failed"] += 1
                log.warning("upscale.tile_failed", tile_key=key, reason=outcome.error)
            elif outcome.cached:
                counts["cached"] += 1
            else:
                counts["computed"] += 1
        self.stats.tiles_failed += counts["failed"]
        self.stats.tiles_cached += counts["cached"]
        self.stats.tiles_computed += counts["computed"]
        self.stats.output_pixels += result.computed_pixels
        self.stats.compute_s += result.timings_ms.get("compute", 0.0) / 1000
        return counts

    async def _reopen_for_retry(self, items: list[QueuedTile]) -> None:
        """After a storage error the slide may have moved tier: look it up again, retry later."""
        for request_key in {item.request for item in items}:
            state = self._requests[request_key]
            self.slides.forget(state.request.exam_id, state.request.slide_number)
            try:
                state.slide = await self.slides.open(state.request.exam_id, state.request.slide_number)
            except Exception as exc:  # noqa: BLE001 - the retry will fail and report it
                log.warning("upscale.reopen_failed", request_id=str(request_key), error=type(exc).__name__)
        for item in items:
            item.attempts += 1
        self.scheduler.defer(items, self.clock() + self.config.lease_poll_s)

    # --- results ------------------------------------------------------------------------

    async def _report(self, by_key: dict[str, list[QueuedTile]], result: PipelineResult, t_start: float,
                      counts: dict[str, int]) -> None:
        done: dict[Hashable, list[UpscaleTileResult]] = defaultdict(list)
        failed: dict[Hashable, dict[str, list[TileRef]]] = defaultdict(lambda: defaultdict(list))
        for key, outcome in result.outcomes.items():
            for item in by_key[key]:
                if outcome.error is None:
                    done[item.request].append(UpscaleTileResult(
                        tile=item.job.tile, object=self.cache.ref(key), cached=outcome.cached,
                        consistency_db=outcome.consistency_db))
                else:
                    failed[item.request][outcome.error].append(item.job.tile)
        for request_key in list(done) + [r for r in failed if r not in done]:
            state = self._requests.get(request_key)
            if state is None:
                continue
            timings = {"queue": max(0.0, (t_start - state.received_at) * 1000), **result.timings_ms}
            model = method_name(self.upscaler, state.request.scale)
            for answer in batch_answers(state.request, state.pending, done.get(request_key, []),
                                        failed.get(request_key, {}), model=model, timings_ms=timings,
                                        consistency_threshold_db=self.config.consistency_threshold_db):
                # Published before the tiles count as answered: if publishing fails, the
                # batch is retried and the answer sent again (a duplicate is harmless).
                await self.publish(answer.event)
                state.pending -= answer.answers
            if not state.pending:
                self._finish(request_key)
        log.info("upscale.batch_done", worker=self.worker_id, **counts,
                 **{f"{k}_ms": round(v, 1) for k, v in result.timings_ms.items()})

    def _finish(self, request_key: object) -> None:
        state = self._requests.pop(request_key)
        self.stats.requests_finished += 1
        log.info("upscale.finished", request_id=str(request_key), priority=state.priority.value,
                 latency_ms=round((self.clock() - state.received_at) * 1000, 1))
        for callback in state.callbacks:
            callback()

    async def _expire_deadlines(self) -> None:
        for key in self._requests.past_deadline(datetime.now(UTC)):
            dropped = self.scheduler.drop_request(key)
            if not dropped:
                continue
            state = self._requests.pop(key)
            await self._reject(state.request, "deadline passed before all tiles were computed",
                               state.callbacks, tiles=[d.job.tile for d in dropped])

    async def _maybe_purge_leases(self) -> None:
        now = self.clock()
        if now - self._last_purge < self.config.purge_interval_s:
            return
        self._last_purge = now
        try:
            purged = await self.leases.purge_expired(grace_s=self.config.lease_ttl_s)
        except Exception as exc:  # noqa: BLE001 - a sweep failure is retried next interval
            log.warning("upscale.lease_purge_failed", error=type(exc).__name__)
            return
        if purged:
            log.info("upscale.leases_purged", count=purged)
