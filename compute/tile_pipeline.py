"""One batch of HR tiles through the hr-cache, the leases and the model. No Kafka, no requests.

1. tiles already in the hr-cache are answered ``cached`` without computing;
2. the others are leased (``compute.tile_leases``); a tile leased by another worker is
   deferred and looked at again shortly (then it is cached, or its lease expired and we take
   it); after taking a lease the cache is checked again, closing the race with a worker that
   finished between our first check and our lease;
3. LR windows with context are read (ranged reads): one per tile, or with blocks one per
   block of neighbouring tiles (``compute.blocks``); the model runs on them (equal windows
   in one call), HR tiles are cut out, PNG-encoded and written, and the leases dropped.

Storage errors while reading are reported as ``retry`` (the engine reopens the slide, which
may have moved tier); a corrupt tile or a model error fails that tile alone (a block that
fails is retried tile by tile).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from compute.blocks import BlockLimits, Window, plan_windows, window_over
from compute.codec import CONTENT_TYPE, encode_png
from compute.plan import TileJob
from compute.scheduler import QueuedTile
from compute.slides import LrSlide
from compute.tile_cache import TileCache
from compute.tile_leases import LeaseStore
from compute.tile_pixels import block_tile, block_window, lone_windows
from compute.upscaler import Upscaler, window_bytes
from slide_io import SlideError

DEFAULT_CALL_BYTES = 512 << 20


@dataclass
class TileOutcome:
    item: QueuedTile
    cached: bool = False
    error: str | None = None


@dataclass
class PipelineResult:
    outcomes: dict[str, TileOutcome] = field(default_factory=dict)  # by tile key
    deferred: list[QueuedTile] = field(default_factory=list)  # another worker holds the lease
    retry: list[QueuedTile] = field(default_factory=list)  # storage error reading the LR
    timings_ms: dict[str, float] = field(default_factory=dict)  # lookup, read, compute, write
    computed_pixels: int = 0


@dataclass(frozen=True)
class _ReadFailure:
    reason: str
    transient: bool  # storage error (retry) rather than a corrupt tile


class TilePipeline:
    def __init__(self, *, upscaler: Upscaler, cache: TileCache, leases: LeaseStore, worker_id: str,
                 lease_ttl_s: float, read_retries: int, clock: Callable[[], float] = time.monotonic,
                 blocks: BlockLimits | None = None, max_call_bytes: int = DEFAULT_CALL_BYTES) -> None:
        """``blocks``: neighbouring tiles share LR windows; ``max_call_bytes``: estimated
        model memory of one model call (equal windows are batched up to it)."""
        self.upscaler = upscaler
        self.blocks = blocks
        self.max_call_bytes = max_call_bytes
        self.cache = cache
        self.leases = leases
        self.worker_id = worker_id
        self.lease_ttl_s = lease_ttl_s
        self.read_retries = read_retries
        self.clock = clock

    async def run(self, by_key: dict[str, list[QueuedTile]],
                  slide_of: Callable[[QueuedTile], LrSlide]) -> PipelineResult:
        """Answer or compute each tile key (one key asked by several requests is computed once)."""
        result = PipelineResult()
        t_start = self.clock()
        leased = await self._lease_uncached(by_key, result)
        t_checked = self.clock()
        read_s = compute_s = write_s = 0.0
        if leased:
            try:
                read_s, compute_s, write_s = await self._compute(leased, by_key, slide_of, result)
            finally:
                await asyncio.gather(*(self.leases.release(k, self.worker_id) for k in leased))
        result.timings_ms = {"read": read_s * 1000, "compute": compute_s * 1000, "write": write_s * 1000,
                             "lookup": (t_checked - t_start) * 1000}
        return result

    async def _lease_uncached(self, by_key: dict[str, list[QueuedTile]], result: PipelineResult) -> list[str]:
        keys = list(by_key)
        cached = await asyncio.gather(*(self.cache.exists(k) for k in keys))
        to_lease = []
        for k, hit in zip(keys, cached):
            if hit:
                result.outcomes[k] = TileOutcome(by_key[k][0], cached=True)
            else:
                to_lease.append(k)
        granted = await asyncio.gather(*(self.leases.acquire(k, self.worker_id, self.lease_ttl_s) for k in to_lease))
        leased = [k for k, ok in zip(to_lease, granted) if ok]
        result.deferred = [item for k, ok in zip(to_lease, granted) if not ok for item in by_key[k]]
        if leased:  # a worker may have finished between our check and our lease
            recheck = await asyncio.gather(*(self.cache.exists(k) for k in leased))
            for k, hit in zip(list(leased), recheck):
                if hit:
                    leased.remove(k)
                    result.outcomes[k] = TileOutcome(by_key[k][0], cached=True)
                    await self.leases.release(k, self.worker_id)
        return leased

    async def _compute(self, keys: list[str], by_key: dict[str, list[QueuedTile]],
                       slide_of: Callable[[QueuedTile], LrSlide],
                       result: PipelineResult) -> tuple[float, float, float]:
        """Read, upscale, write the leased tiles. Returns stage seconds."""
        item_of = {k: by_key[k][0] for k in keys}  # the tile's first asker stands for all
        t0 = self.clock()
        windows = self._windows([item.job for item in item_of.values()])
        sources = [(w, slide_of(item_of[w.jobs[0].key])) for w in windows]
        read = await asyncio.to_thread(self._read_windows, sources)
        t1 = self.clock()
        ready = []
        for window, pixels in read:
            if isinstance(pixels, _ReadFailure):
                self._read_failed(window, pixels, item_of, by_key, result)
            else:
                ready.append((window, pixels))
        tiles = await asyncio.to_thread(self._upscale, ready)
        t2 = self.clock()
        encoded = []
        for job, tile in tiles:
            if isinstance(tile, str):
                result.outcomes[job.key] = TileOutcome(item_of[job.key], error=tile)
            else:
                encoded.append((item_of[job.key], tile))
        # One thread per tile: PNG encoding releases the GIL, so it spreads over the cores.
        payloads = await asyncio.gather(*(asyncio.to_thread(encode_png, t) for _, t in encoded))
        written = await asyncio.gather(
            *(self.cache.put(item.job.key, data, CONTENT_TYPE) for (item, _), data in zip(encoded, payloads)),
            return_exceptions=True,
        )
        for (item, _), outcome in zip(encoded, written):
            if isinstance(outcome, BaseException):
                error = f"hr-cache write failed ({type(outcome).__name__}: {outcome})"
                result.outcomes[item.job.key] = TileOutcome(item, error=error)
            else:
                result.outcomes[item.job.key] = TileOutcome(item)
                result.computed_pixels += item.job.output_pixels
        return t1 - t0, t2 - t1, self.clock() - t2

    def _windows(self, jobs: list[TileJob]) -> list[Window]:
        """Blocks of neighbouring tiles, or one window per tile without blocks."""
        if self.blocks is None:
            return [window_over([job]) for job in jobs]
        return plan_windows(jobs, self.blocks)

    def _read_failed(self, window: Window, failure: _ReadFailure, item_of: dict[str, QueuedTile],
                     by_key: dict[str, list[QueuedTile]], result: PipelineResult) -> None:
        for job in window.jobs:
            item = item_of[job.key]
            if failure.transient and item.attempts < self.read_retries:
                result.retry += by_key[job.key]
            else:
                result.outcomes[job.key] = TileOutcome(item, error=failure.reason)

    @classmethod
    def _read_windows(cls, sources: list[tuple[Window, LrSlide]]) -> list[tuple[Window, np.ndarray | _ReadFailure]]:
        """Padded LR windows, or why not (runs in a thread). A block that cannot be read is
        read again tile by tile, so an unreadable LR tile fails only the tiles it feeds."""
        out: list[tuple[Window, np.ndarray | _ReadFailure]] = []
        for window, slide in sources:
            pixels = cls._read_one(window, slide)
            if isinstance(pixels, _ReadFailure) and len(window.jobs) > 1:
                out += cls._read_windows([(window_over([job]), slide) for job in window.jobs])
            else:
                out.append((window, pixels))
        return out

    @staticmethod
    def _read_one(window: Window, slide: LrSlide) -> np.ndarray | _ReadFailure:
        try:
            return block_window(slide.read_region, window)
        except SlideError as exc:
            return _ReadFailure(f"LR tile unreadable: {exc}", transient=False)
        except Exception as exc:  # noqa: BLE001 - storage errors: retried, then reported per tile
            return _ReadFailure(f"LR read failed ({type(exc).__name__}: {exc})", transient=True)

    def _upscale(self, ready: Sequence[tuple[Window, np.ndarray]]) -> list[tuple[TileJob, np.ndarray | str]]:
        """Windows of equal shape through the model together, in calls within the memory
        budget; the tiles cut out of the outputs (or why not)."""
        by_shape: dict[tuple[int, int, int], list[tuple[Window, np.ndarray]]] = defaultdict(list)
        for window, pixels in ready:
            by_shape[window.shape_key].append((window, pixels))
        out: list[tuple[TileJob, np.ndarray | str]] = []
        for (scale, height, width), group in by_shape.items():
            per_call = max(1, self.max_call_bytes // max(1, window_bytes(self.upscaler, height, width, scale)))
            for start in range(0, len(group), per_call):
                out += self._run_model(group[start : start + per_call])
        return out

    def _run_model(self, group: Sequence[tuple[Window, np.ndarray]]) -> list[tuple[TileJob, np.ndarray | str]]:
        """Model on equal windows; if it fails, window by window and then tile by tile, so
        one bad tile fails alone."""
        scale = group[0][0].effective_scale
        try:
            outputs = self.upscaler.upscale_batch([pixels for _, pixels in group], scale)
            if len(outputs) != len(group):
                raise ValueError(f"model returned {len(outputs)} images for {len(group)}")
            return [(job, self._cut(window, out, job)) for (window, _), out in zip(group, outputs)
                    for job in window.jobs]
        except Exception as exc:  # noqa: BLE001 - isolate the failing tile(s) below
            if len(group) == 1 and len(group[0][0].jobs) == 1:
                return [(group[0][0].jobs[0], f"model error: {type(exc).__name__}: {exc}")]
        if len(group) > 1:
            return [pair for one in group for pair in self._run_model([one])]
        return [pair for lone in lone_windows(group[0][1], group[0][0]) for pair in self._run_model([lone])]

    @staticmethod
    def _cut(window: Window, upscaled: np.ndarray, job: TileJob) -> np.ndarray:
        if upscaled.dtype != np.uint8:
            raise ValueError(f"model returned {upscaled.dtype}, expected uint8")
        return block_tile(upscaled, window, job)
