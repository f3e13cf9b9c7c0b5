"""The compute engine: requests in, HR tiles and result events out. No Kafka in here.

One loop takes one batch at a time from the priority scheduler, so higher-priority work
preempts lower-priority work at batch (tile) granularity. For each batch:

1. tiles already in the hr-cache are answered ``cached=True`` without computing;
2. the others are leased (``compute.tile_leases``); a tile leased by another worker is deferred
   and looked at again shortly (then it is cached, or its lease expired and we take it);
   after taking a lease the cache is checked again, closing the race with a worker that
   finished between our first check and our lease;
3. LR windows with context are read (ranged reads), the model runs on the batch (same
   scale and window size, tiles of any request), HR tiles are cropped, PNG-encoded and
   written, and the leases dropped;
4. one ``upscale.done`` per request in the batch, with timings; ``upscale.failed`` for the
   tiles that failed (unreadable LR, model error) - the others continue.

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
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import structlog

from compute.codec import CONTENT_TYPE, encode_png
from compute.plan import InvalidRequest, plan_request
from compute.scheduler import Batch, PriorityScheduler, QueuedTile
from compute.slides import LrSlide, SlideRepository, UnknownSlide
from compute.tile_cache import TileCache
from compute.tile_leases import LeaseStore
from compute.tile_pixels import hr_tile, lr_window
from compute.upscaler import Upscaler
from schemas.events import Event, TileRef, UpscaleDone, UpscaleFailed, UpscaleRequested, UpscaleTileResult
from schemas.layout import hr_tile_key
from schemas.topics import Priority
from slide_io import SlideError

log = structlog.get_logger(__name__)

Publish = Callable[[Event], Awaitable[None]]
BacklogListener = Callable[[dict[Priority, int]], None]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 8
    lease_ttl_s: float = 120.0  # far above one batch; a dead worker's tiles free up after this
    lease_poll_s: float = 0.25  # how soon to look again at a tile another worker computes
    max_tiles_per_request: int = 512
    purge_interval_s: float = 300.0  # sweep of expired leases left by dead workers
    open_attempts: int = 3  # storage errors opening a slide are retried before failing
    read_retries: int = 2  # storage errors reading a tile are retried before failing it
    error_backoff_s: float = 1.0  # a batch that failed on infrastructure is retried after this


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


@dataclass
class _Request:
    request: UpscaleRequested
    priority: Priority
    received_at: float
    slide: LrSlide
    pending: set[str]  # tile keys not yet answered (done or failed)
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    sources: set[Hashable] = field(default_factory=set)  # Kafka partitions it was delivered from
    started: bool = False


@dataclass(frozen=True)
class _ReadFailure:
    reason: str
    transient: bool  # storage error (retry) rather than a corrupt tile


@dataclass
class _TileOutcome:
    item: QueuedTile
    cached: bool = False
    error: str | None = None


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
        self.scheduler = PriorityScheduler(config.max_batch)
        self.stats = EngineStats()
        self._requests: dict[object, _Request] = {}
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
        existing = self._requests.get(key)
        if existing is not None:
            if on_finished is not None:
                existing.callbacks.append(on_finished)
            if source is not None:
                existing.sources.add(source)
            return
        callbacks = [on_finished] if on_finished is not None else []
        if self._past_deadline(request):
            await self._reject(request, "deadline passed before the request was processed", callbacks)
            return
        try:
            slide = await self._open_slide(request)
            jobs = plan_request(request, slide.geometry, self.upscaler.margin_for,
                                self.config.max_tiles_per_request)
        except (UnknownSlide, InvalidRequest, SlideError) as exc:
            await self._reject(request, str(exc), callbacks)
            return
        state = _Request(request, Priority(request.priority), self.clock(), slide, {j.key for j in jobs}, callbacks,
                         {source} if source is not None else set())
        self._requests[key] = state
        self.scheduler.add(key, state.priority, jobs)
        log.info("upscale.queued", request_id=str(key), exam_id=request.exam_id,
                 slide_number=request.slide_number, priority=state.priority.value, tiles=len(jobs))
        self._notify_backlog()
        self._idle.clear()
        self._wake.set()

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
                      tiles: list[TileRef] | None = None) -> None:
        await self.publish(UpscaleFailed(request_id=request.request_id, exam_id=request.exam_id,
                                         slide_number=request.slide_number, reason=reason, tiles=tiles))
        log.warning("upscale.rejected", request_id=str(request.request_id), reason=reason)
        self.stats.requests_failed += 1
        for callback in callbacks:
            callback()

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

    def _requeue_unanswered(self, batch: Batch, delay: float) -> None:
        """Tiles of a failed batch whose requests still wait for them go back in the queue."""
        again = [item for item in batch.tiles
                 if item.request in self._requests and item.job.key in self._requests[item.request].pending]
        self.scheduler.defer(again, self.clock() + delay)

    def known_sources(self) -> set[Hashable]:
        return {source for state in self._requests.values() for source in state.sources}

    def drop_sources(self, revoked: set[Hashable]) -> int:
        """Forget requests whose every source was revoked (another worker owns those
        partitions now and will get the messages again, since we never acknowledged them).
        Their queued tiles go; tiles already computed stay in the hr-cache for the new
        owner. Returns the number of requests dropped."""
        dropped = 0
        for key, state in list(self._requests.items()):
            if not state.sources or not state.sources & revoked:
                continue
            state.sources -= revoked
            if not state.sources:
                self.scheduler.drop_request(key)
                del self._requests[key]
                dropped += 1
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
        self._note_preemption(batch.priority)
        t_start = self.clock()
        for item in items:
            self._requests[item.request].started = True

        by_key: dict[str, list[QueuedTile]] = defaultdict(list)
        for item in items:  # one tile asked by several requests in this batch: compute once
            by_key[item.job.key].append(item)
        keys = list(by_key)
        outcomes: dict[str, _TileOutcome] = {}

        cached = await asyncio.gather(*(self.cache.exists(k) for k in keys))
        to_lease = []
        for k, hit in zip(keys, cached):
            if hit:
                outcomes[k] = _TileOutcome(by_key[k][0], cached=True)
            else:
                to_lease.append(k)
        granted = await asyncio.gather(
            *(self.leases.acquire(k, self.worker_id, self.config.lease_ttl_s) for k in to_lease))
        leased = [k for k, ok in zip(to_lease, granted) if ok]
        deferred = [k for k, ok in zip(to_lease, granted) if not ok]
        if leased:  # a worker may have finished between our check and our lease
            recheck = await asyncio.gather(*(self.cache.exists(k) for k in leased))
            for k, hit in zip(list(leased), recheck):
                if hit:
                    leased.remove(k)
                    outcomes[k] = _TileOutcome(by_key[k][0], cached=True)
                    await self.leases.release(k, self.worker_id)
        if deferred:
            self.stats.tiles_deferred += len(deferred)
            self.scheduler.defer([it for k in deferred for it in by_key[k]], self.clock() + self.config.lease_poll_s)
        t_checked = self.clock()

        read_s = compute_s = write_s = 0.0
        if leased:
            try:
                read_s, compute_s, write_s = await self._compute(batch, leased, by_key, outcomes)
            finally:
                await asyncio.gather(*(self.leases.release(k, self.worker_id) for k in leased))

        self.stats.batches += 1
        await self._report(by_key, outcomes, t_start, {
            "read": read_s * 1000, "compute": compute_s * 1000, "write": write_s * 1000,
            "lookup": (t_checked - t_start) * 1000,
        })

    async def _compute(self, batch: Batch, keys: list[str], by_key: dict[str, list[QueuedTile]],
                       outcomes: dict[str, _TileOutcome]) -> tuple[float, float, float]:
        """Read, upscale, write the leased tiles; fills ``outcomes``. Returns stage seconds."""
        items = [by_key[k][0] for k in keys]
        t0 = self.clock()
        sources = [(item, self._requests[item.request].slide) for item in items]
        windows = await asyncio.to_thread(self._read_windows, sources)
        t1 = self.clock()
        ready, retry = [], []
        for item, window in zip(items, windows):
            if isinstance(window, _ReadFailure) and window.transient and item.attempts < self.config.read_retries:
                retry.append(item)
            elif isinstance(window, _ReadFailure):
                outcomes[item.job.key] = _TileOutcome(item, error=window.reason)
            else:
                ready.append((item, window))
        if retry:
            await self._reopen_for_retry([same for item in retry for same in by_key[item.job.key]])
        tiles = await asyncio.to_thread(self._upscale, batch.batch_key[0], ready)
        t2 = self.clock()
        encoded = []
        for item, tile in tiles:
            if isinstance(tile, str):
                outcomes[item.job.key] = _TileOutcome(item, error=tile)
            else:
                encoded.append((item, tile))
        payloads = await asyncio.to_thread(lambda: [encode_png(t) for _, t in encoded])
        results = await asyncio.gather(
            *(self.cache.put(item.job.key, data, CONTENT_TYPE) for (item, _), data in zip(encoded, payloads)),
            return_exceptions=True,
        )
        for (item, _), result in zip(encoded, results):
            if isinstance(result, BaseException):
                outcomes[item.job.key] = _TileOutcome(item, error=f"hr-cache write failed ({type(result).__name__}: {result})")
            else:
                outcomes[item.job.key] = _TileOutcome(item)
                self.stats.tiles_computed += 1
                self.stats.output_pixels += item.job.output_pixels
        t3 = self.clock()
        self.stats.compute_s += t2 - t1
        return t1 - t0, t2 - t1, t3 - t2

    @staticmethod
    def _read_windows(sources: list[tuple[QueuedTile, LrSlide]]) -> list[np.ndarray | _ReadFailure]:
        """Padded LR windows, or why not, per tile (runs in a thread)."""
        out: list[np.ndarray | _ReadFailure] = []
        for item, slide in sources:
            try:
                out.append(lr_window(slide.read_region, item.job))
            except SlideError as exc:
                out.append(_ReadFailure(f"LR tile unreadable: {exc}", transient=False))
            except Exception as exc:  # noqa: BLE001 - storage errors: retried, then reported per tile
                out.append(_ReadFailure(f"LR read failed ({type(exc).__name__}: {exc})", transient=True))
        return out

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

    def _upscale(self, scale: int, ready: Sequence[tuple[QueuedTile, np.ndarray]]
                 ) -> list[tuple[QueuedTile, np.ndarray | str]]:
        """Model on the whole batch; if it fails, tile by tile so one bad tile fails alone."""
        if not ready:
            return []
        try:
            outputs = self.upscaler.upscale_batch([w for _, w in ready], scale)
            if len(outputs) != len(ready):
                raise ValueError(f"model returned {len(outputs)} images for {len(ready)}")
            return [(item, self._crop(item, out)) for (item, _), out in zip(ready, outputs)]
        except Exception as exc:  # noqa: BLE001 - isolate the failing tile(s) below
            if len(ready) == 1:
                return [(ready[0][0], f"model error: {type(exc).__name__}: {exc}")]
        return [pair for one in ready for pair in self._upscale(scale, [one])]

    @staticmethod
    def _crop(item: QueuedTile, upscaled: np.ndarray) -> np.ndarray:
        if upscaled.dtype != np.uint8:
            raise ValueError(f"model returned {upscaled.dtype}, expected uint8")
        return hr_tile(upscaled, item.job)

    # --- results ------------------------------------------------------------------------

    async def _report(self, by_key: dict[str, list[QueuedTile]], outcomes: dict[str, _TileOutcome],
                      t_start: float, timings: dict[str, float]) -> None:
        done: dict[object, list[UpscaleTileResult]] = defaultdict(list)
        failed: dict[object, dict[str, list[TileRef]]] = defaultdict(lambda: defaultdict(list))
        for key, outcome in outcomes.items():
            for item in by_key[key]:
                if outcome.error is None:
                    done[item.request].append(UpscaleTileResult(
                        tile=item.job.tile, object=self.cache.ref(key), cached=outcome.cached))
                else:
                    failed[item.request][outcome.error].append(item.job.tile)
            if outcome.error is None and outcome.cached:
                self.stats.tiles_cached += 1
            elif outcome.error is not None:
                self.stats.tiles_failed += 1
                log.warning("upscale.tile_failed", tile_key=key, reason=outcome.error)
        for request_key in list(done) + [r for r in failed if r not in done]:
            state = self._requests.get(request_key)
            if state is None:
                continue
            req = state.request
            if request_key in done:
                results = done[request_key]
                answered = {r.object.key for r in results}
                # Published before the tiles count as answered: if publishing fails, the
                # batch is retried and the answer sent again (a duplicate is harmless).
                await self.publish(UpscaleDone(
                    request_id=req.request_id, exam_id=req.exam_id, slide_number=req.slide_number,
                    scale=req.scale, results=results, model=self.upscaler.name,
                    timings_ms={"queue": max(0.0, (t_start - state.received_at) * 1000), **timings},
                    remaining=len(state.pending - answered),
                ))
                state.pending -= answered
            for reason, tiles in failed.get(request_key, {}).items():
                answered = {hr_tile_key(req.exam_id, req.slide_number, req.scale, t.level, t.col, t.row)
                            for t in tiles}
                await self.publish(UpscaleFailed(request_id=req.request_id, exam_id=req.exam_id,
                                                 slide_number=req.slide_number, reason=reason, tiles=tiles,
                                                 remaining=len(state.pending - answered)))
                state.pending -= answered
            if not state.pending:
                self._finish(request_key)
        log.info("upscale.batch_done", worker=self.worker_id, computed=sum(1 for o in outcomes.values()
                 if o.error is None and not o.cached), cached=sum(1 for o in outcomes.values() if o.cached),
                 failed=sum(1 for o in outcomes.values() if o.error), **{f"{k}_ms": round(v, 1) for k, v in timings.items()})

    def _finish(self, request_key: object) -> None:
        state = self._requests.pop(request_key)
        self.stats.requests_finished += 1
        log.info("upscale.finished", request_id=str(request_key), priority=state.priority.value,
                 latency_ms=round((self.clock() - state.received_at) * 1000, 1))
        for callback in state.callbacks:
            callback()

    def _note_preemption(self, priority: Priority) -> None:
        """Count batches that run while an already started lower-priority request waits."""
        if any(s.started and s.priority.rank > priority.rank for s in self._requests.values()):
            self.stats.preemptions += 1

    async def _expire_deadlines(self) -> None:
        now = datetime.now(UTC)
        for key, state in list(self._requests.items()):
            deadline = state.request.deadline
            if deadline is not None and deadline <= now:
                dropped = self.scheduler.drop_request(key)
                if not dropped:
                    continue
                self._requests.pop(key)
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
