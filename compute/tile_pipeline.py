"""One batch of HR tiles through the hr-cache, the leases and the model. No Kafka, no requests.

1. tiles already in the hr-cache are answered ``cached`` without computing;
2. the others are leased (``compute.tile_leases``); a tile leased by another worker is
   deferred and looked at again shortly (then it is cached, or its lease expired and we take
   it); after taking a lease the cache is checked again, closing the race with a worker that
   finished between our first check and our lease;
3. LR windows with context are read (ranged reads), the model runs on the batch (same scale
   and window size), HR tiles are cropped, PNG-encoded and written, and the leases dropped.

Storage errors while reading are reported as ``retry`` (the engine reopens the slide, which
may have moved tier); a corrupt tile or a model error fails that tile alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from compute.codec import CONTENT_TYPE, encode_png
from compute.scheduler import QueuedTile
from compute.slides import LrSlide
from compute.tile_cache import TileCache
from compute.tile_leases import LeaseStore
from compute.tile_pixels import hr_tile, lr_window
from compute.upscaler import Upscaler
from slide_io import SlideError


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
                 lease_ttl_s: float, read_retries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.upscaler = upscaler
        self.cache = cache
        self.leases = leases
        self.worker_id = worker_id
        self.lease_ttl_s = lease_ttl_s
        self.read_retries = read_retries
        self.clock = clock

    async def run(self, scale: int, by_key: dict[str, list[QueuedTile]],
                  slide_of: Callable[[QueuedTile], LrSlide]) -> PipelineResult:
        """Answer or compute each tile key (one key asked by several requests is computed once)."""
        result = PipelineResult()
        t_start = self.clock()
        leased = await self._lease_uncached(by_key, result)
        t_checked = self.clock()
        read_s = compute_s = write_s = 0.0
        if leased:
            try:
                read_s, compute_s, write_s = await self._compute(scale, leased, by_key, slide_of, result)
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

    async def _compute(self, scale: int, keys: list[str], by_key: dict[str, list[QueuedTile]],
                       slide_of: Callable[[QueuedTile], LrSlide],
                       result: PipelineResult) -> tuple[float, float, float]:
        """Read, upscale, write the leased tiles. Returns stage seconds."""
        items = [by_key[k][0] for k in keys]
        t0 = self.clock()
        windows = await asyncio.to_thread(self._read_windows, [(item, slide_of(item)) for item in items])
        t1 = self.clock()
        ready = []
        for item, window in zip(items, windows):
            if isinstance(window, _ReadFailure) and window.transient and item.attempts < self.read_retries:
                result.retry += by_key[item.job.key]
            elif isinstance(window, _ReadFailure):
                result.outcomes[item.job.key] = TileOutcome(item, error=window.reason)
            else:
                ready.append((item, window))
        tiles = await asyncio.to_thread(self._upscale, scale, ready)
        t2 = self.clock()
        encoded = []
        for item, tile in tiles:
            if isinstance(tile, str):
                result.outcomes[item.job.key] = TileOutcome(item, error=tile)
            else:
                encoded.append((item, tile))
        payloads = await asyncio.to_thread(lambda: [encode_png(t) for _, t in encoded])
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
