"""One batch of HR tiles through the hr-cache, the leases and the model. No Kafka, no requests.

1. tiles already in the hr-cache are answered ``cached`` without computing;
2. the others are leased (``compute.tile_leases``); a tile leased by another worker is
   deferred and looked at again shortly (then it is cached, or its lease expired and we take
   it); after taking a lease the cache is checked again, closing the race with a worker that
   finished between our first check and our lease;
3. LR windows with context are read (ranged reads): one per tile, or with blocks one per
   block of neighbouring tiles (``compute.blocks``); the model runs on them (equal windows
   in one call), HR tiles are cut out, PNG-encoded and written, and the leases dropped.
   Each computed tile is measured against its LR core (``compute.consistency``); the value is
   stored with the tile and in one map fragment per slide and batch (``compute.consistency_map``).

Storage errors while reading are reported as ``retry`` (the engine reopens the slide, which
may have moved tier); a corrupt tile or a model error fails that tile alone (a block that
fails is retried tile by tile).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from compute.blocks import BlockLimits, Window, plan_windows, window_over
from compute.codec import CONTENT_TYPE, encode_png
from compute.consistency import consistency_db
from compute.consistency_map import encode_fragment, metadata_of, tile_name
from compute.plan import TileJob
from compute.scheduler import QueuedTile
from compute.slides import LrSlide
from compute.tile_cache import TileCache
from compute.tile_leases import LeaseStore
from compute.tile_pixels import block_tile, block_window, lone_windows, lr_core
from compute.upscaler import Upscaler, window_bytes
from schemas.layout import hr_consistency_key
from slide_io import SlideError

log = structlog.get_logger(__name__)

# Estimated model memory of one call (``Upscaler.window_bytes``; real use is ~0.8 of it on CPU):
# at x8 a whole viewport with its ring is one 346 x 250 LR window (~0.8 GB estimated), the
# same activation budget model_zoo's own tiling uses on CPU.
DEFAULT_CALL_BYTES = 1 << 30


@dataclass
class TileOutcome:
    item: QueuedTile
    cached: bool = False
    error: str | None = None
    consistency_db: float | None = None  # computed tiles only (compute.consistency)


@dataclass(frozen=True)
class _Cut:
    pixels: np.ndarray  # the HR tile
    lr: np.ndarray  # the LR pixels it shows (compute.tile_pixels.lr_core)
    scale: int

    def finish(self) -> tuple[bytes, float]:
        """PNG and consistency with the LR (~3 ms each per tile): run per tile in threads, in
        parallel (libpng and numpy release the GIL), not on the model's thread."""
        return encode_png(self.pixels), consistency_db(self.pixels, self.lr, self.scale)


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
        self._releasing: set[asyncio.Future[None]] = set()
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
        await self.drain()  # the previous batch's leases are gone before we take new ones
        result = PipelineResult()
        t_start = self.clock()
        leased = await self._lease_uncached(by_key, result)
        t_checked = self.clock()
        read_s = compute_s = write_s = 0.0
        if leased:
            try:
                read_s, compute_s, write_s = await self._compute(leased, by_key, slide_of, result)
            except BaseException:
                await self._release(leased)
                raise
            # The tiles are in the hr-cache: the answers go out while the leases are dropped
            # (a worker that sees one still held defers the tile and then finds it cached).
            release = asyncio.ensure_future(self._release(leased))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)
        result.timings_ms = {"read": read_s * 1000, "compute": compute_s * 1000, "write": write_s * 1000,
                             "lookup": (t_checked - t_start) * 1000}
        return result

    async def _release(self, keys: list[str]) -> None:
        try:
            await asyncio.gather(*(self.leases.release(k, self.worker_id) for k in keys))
        except Exception as exc:  # noqa: BLE001 - an unreleased lease simply expires
            log.warning("upscale.lease_release_failed", tiles=len(keys), error=f"{type(exc).__name__}: {exc}")

    async def drain(self) -> None:
        """Wait for leases still being released (before the next batch, and at stop)."""
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    async def _lease_uncached(self, by_key: dict[str, list[QueuedTile]], result: PipelineResult) -> list[str]:
        keys = list(by_key)
        cached = await asyncio.gather(*(self.cache.exists(k) for k in keys))
        to_lease = []
        for k, hit in zip(keys, cached):
            if hit:
                result.outcomes[k] = TileOutcome(by_key[k][0], cached=True)
            else:
                to_lease.append(k)
        granted = await self.leases.acquire_many(to_lease, self.worker_id, self.lease_ttl_s) if to_lease else {}
        leased = [k for k in to_lease if granted[k]]
        result.deferred = [item for k in to_lease if not granted[k] for item in by_key[k]]
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
        cut: list[tuple[QueuedTile, _Cut]] = []
        for job, tile in tiles:
            if isinstance(tile, str):
                result.outcomes[job.key] = TileOutcome(item_of[job.key], error=tile)
            else:
                cut.append((item_of[job.key], tile))
        # One thread per tile, so the encoding and the measure spread over the cores.
        finished = await asyncio.gather(*(asyncio.to_thread(t.finish) for _, t in cut))
        written = await asyncio.gather(
            *(self.cache.put(item.job.key, data, CONTENT_TYPE, metadata_of(value))
              for (item, _), (data, value) in zip(cut, finished)),
            return_exceptions=True,
        )
        stored = []
        for (item, _), (_, value), outcome in zip(cut, finished, written):
            if isinstance(outcome, BaseException):
                error = f"hr-cache write failed ({type(outcome).__name__}: {outcome})"
                result.outcomes[item.job.key] = TileOutcome(item, error=error)
            else:
                result.outcomes[item.job.key] = TileOutcome(item, consistency_db=value)
                result.computed_pixels += item.job.output_pixels
                stored.append((item.job, value))
        await self._write_maps(stored)
        return t1 - t0, t2 - t1, self.clock() - t2

    async def _write_maps(self, stored: list[tuple[TileJob, float]]) -> None:
        """One new map fragment per slide and scale for the tiles just written (after them, so
        the map names no tile that is not there). The map is advisory, the tiles carry their
        own value: a failed fragment is logged, not retried, and fails no tile."""
        by_slide: dict[tuple[str, int, int], dict[str, float]] = defaultdict(dict)
        for job, value in stored:
            by_slide[(job.exam_id, job.slide_number, job.scale)][tile_name(job.tile)] = value
        fragment = uuid.uuid4().hex  # unique per write: one writer per object
        written = await asyncio.gather(
            *(self.cache.put(hr_consistency_key(exam, slide, scale, fragment),
                             encode_fragment(values, self.upscaler.name), "application/json")
              for (exam, slide, scale), values in by_slide.items()),
            return_exceptions=True)
        for (exam, slide, scale), outcome in zip(by_slide, written):
            if isinstance(outcome, BaseException):
                log.warning("upscale.consistency_map_write_failed", exam_id=exam, slide_number=slide, scale=scale,
                            error=f"{type(outcome).__name__}: {outcome}")

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

    def _upscale(self, ready: Sequence[tuple[Window, np.ndarray]]) -> list[tuple[TileJob, _Cut | str]]:
        """Windows of equal shape through the model together, in calls within the memory
        budget; the tiles cut out of the outputs (or why not)."""
        by_shape: dict[tuple[int, int, int], list[tuple[Window, np.ndarray]]] = defaultdict(list)
        for window, pixels in ready:
            by_shape[window.shape_key].append((window, pixels))
        out: list[tuple[TileJob, _Cut | str]] = []
        for (scale, height, width), group in by_shape.items():
            per_call = max(1, self.max_call_bytes // max(1, window_bytes(self.upscaler, height, width, scale)))
            for start in range(0, len(group), per_call):
                out += self._run_model(group[start : start + per_call])
        return out

    def _run_model(self, group: Sequence[tuple[Window, np.ndarray]]) -> list[tuple[TileJob, _Cut | str]]:
        """Model on equal windows; if it fails, window by window and then tile by tile, so
        one bad tile fails alone."""
        scale = group[0][0].effective_scale
        try:
            outputs = self.upscaler.upscale_batch([pixels for _, pixels in group], scale)
            if len(outputs) != len(group):
                raise ValueError(f"model returned {len(outputs)} images for {len(group)}")
            return [(job, self._cut(window, pixels, out, job)) for (window, pixels), out in zip(group, outputs)
                    for job in window.jobs]
        except Exception as exc:  # noqa: BLE001 - isolate the failing tile(s) below
            if len(group) == 1 and len(group[0][0].jobs) == 1:
                return [(group[0][0].jobs[0], f"model error: {type(exc).__name__}: {exc}")]
        if len(group) > 1:
            return [pair for one in group for pair in self._run_model([one])]
        return [pair for lone in lone_windows(group[0][1], group[0][0]) for pair in self._run_model([lone])]

    @staticmethod
    def _cut(window: Window, pixels: np.ndarray, upscaled: np.ndarray, job: TileJob) -> _Cut:
        """The job's HR tile, with the LR it was computed from."""
        if upscaled.dtype != np.uint8:
            raise ValueError(f"model returned {upscaled.dtype}, expected uint8")
        return _Cut(block_tile(upscaled, window, job), lr_core(pixels, window, job), window.effective_scale)
