"""Whole-slide generation: every HR tile of a slide, shared by all compute workers, stitched
into one pyramidal HR TIFF (pre-computation for distribution, export).

The slide's top-level tiles are cut into chunks of neighbouring tiles (neighbours share LR
chunks, so reads stay local); each chunk is one ``upscale.requested`` message, and the
messages go round-robin to the partitions of the job's priority class, so every worker
holding one of those partitions takes a share. Chunks are small so a worker's prefetch
stays bounded and an interactive request never waits behind a whole slide. The caller
follows the answers (progress), then reads the tiles back from the hr-cache and stitches.

Request ids are derived from the job id (uuid5), so re-sending a job after a crash asks
for the same requests again, and tiles already in the hr-cache come back as cached.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import numpy as np
import structlog

from compute.codec import decode_png
from compute.plan import SlideGeometry
from compute.stitch import write_hr_pyramid
from core.settings import Settings
from core.upscale_client import Answer, UpscaleClient, UpscaleError
from schemas.common import ObjectRef, StorageTier
from schemas.events import TileRef, UpscaleDone, UpscaleFailed, UpscaleRequested, UpscaleTileResult
from schemas.layout import TILE_SIZE, hr_prefix, hr_tile_key
from schemas.topics import Priority, priority_partitions
from slide_io import Compression

log = structlog.get_logger(__name__)

_JOB_NAMESPACE = uuid.UUID("6f4d1a52-3c7e-4b0a-9d1e-8a2b5c7d9e10")
HR_SLIDE_NAME = "slide.tiff"


def hr_slide_key(exam_id: str, slide_number: int, scale: int) -> str:
    """Where the stitched HR TIFF goes in the hr-cache: beside its tiles, so dropping the
    slide's HR prefix (discharge, eviction) drops it too."""
    return f"{hr_prefix(exam_id, slide_number, scale)}{HR_SLIDE_NAME}"


def plan_chunks(geometry: SlideGeometry, scale: int, chunk_tiles: int) -> list[list[TileRef]]:
    """Top-level tiles in compact blocks of at most ``chunk_tiles``, block rows top to bottom."""
    if chunk_tiles < 1:
        raise ValueError(f"chunk_tiles must be >= 1, got {chunk_tiles}")
    level = geometry.top_level(scale)
    cols, rows = geometry.grid(scale, level)
    block_w = min(cols, max(1, math.isqrt(chunk_tiles)))
    block_h = max(1, chunk_tiles // block_w)
    chunks = []
    for by in range(0, rows, block_h):
        for bx in range(0, cols, block_w):
            chunks.append([TileRef(level=level, col=c, row=r)
                           for r in range(by, min(by + block_h, rows)) for c in range(bx, min(bx + block_w, cols))])
    return chunks


def chunk_requests(exam_id: str, slide_number: int, scale: int, priority: Priority, chunks: list[list[TileRef]],
                   job_id: UUID) -> list[tuple[UpscaleRequested, int]]:
    """One request per chunk, spread round-robin over the priority class's partitions."""
    partitions = priority_partitions(priority)
    return [
        (UpscaleRequested(request_id=uuid.uuid5(job_id, str(i)), exam_id=exam_id, slide_number=slide_number,
                          scale=scale, priority=priority, tiles=chunk), partitions[i % len(partitions)])
        for i, chunk in enumerate(chunks)
    ]


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    failed: int
    computed: int  # done by a worker for this job (the rest were in the hr-cache already)
    elapsed_s: float

    @property
    def fraction(self) -> float:
        return (self.done + self.failed) / self.total if self.total else 1.0

    @property
    def eta_s(self) -> float | None:
        answered = self.done + self.failed
        return None if not answered else self.elapsed_s * (self.total - answered) / answered


@dataclass
class ProgressTracker:
    """Follows the answers of a job's requests; duplicate answers (redeliveries) count once."""

    expected: dict[UUID, set[tuple[int, int, int]]]
    started: float = field(default_factory=time.monotonic)
    results: dict[tuple[int, int, int], UpscaleTileResult] = field(default_factory=dict)
    failures: list[UpscaleFailed] = field(default_factory=list)
    _failed_tiles: set[tuple[int, int, int]] = field(default_factory=set)
    computed: int = 0
    models: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(len(tiles) for tiles in self.expected.values())

    def feed(self, answer: Answer) -> bool:
        """Take one answer; True if it was about this job."""
        tiles = self.expected.get(answer.request_id)
        if tiles is None:
            return False
        if isinstance(answer, UpscaleDone):
            self.models.add(answer.model)
            for result in answer.results:
                key = (result.tile.level, result.tile.col, result.tile.row)
                if key in tiles and key not in self.results:
                    self.results[key] = result
                    self.computed += not result.cached
                    self._failed_tiles.discard(key)
        else:
            self.failures.append(answer)
            for t in answer.tiles or [TileRef(level=lv, col=c, row=r) for lv, c, r in tiles]:
                key = (t.level, t.col, t.row)
                if key not in self.results:
                    self._failed_tiles.add(key)
        return True

    @property
    def finished(self) -> bool:
        return len(self.results) + len(self._failed_tiles) >= self.total

    def progress(self) -> Progress:
        return Progress(self.total, len(self.results), len(self._failed_tiles), self.computed,
                        time.monotonic() - self.started)


@dataclass(frozen=True)
class WholeSlideResult:
    hr_slide: ObjectRef  # the stitched pyramidal TIFF in the hr-cache
    local_copy: Path | None
    width: int
    height: int
    tiles: int
    computed: int
    compute_s: float  # until the last tile was answered
    stitch_s: float


async def generate_whole_slide(
    settings: Settings, exam_id: str, slide_number: int, scale: int = 8, *,
    priority: Priority = Priority.BACKGROUND, output: Path | None = None,
    compression: Compression = Compression.JPEG, chunk_tiles: int | None = None,
    on_progress: Callable[[Progress], None] | None = None, timeout_s: float = 6 * 3600,
    job_id: UUID | None = None,
) -> WholeSlideResult:
    """Have the compute workers produce every HR tile of the slide at ``scale`` and stitch
    them into a pyramidal TIFF in the hr-cache (and at ``output`` if given)."""
    from catalog.db import connect, database
    from catalog.repository import Catalog
    from compute.slides import CatalogSlides
    from compute.tile_cache import S3TileCache
    from storage.objects import ObjectStore

    client = connect(settings.mongo)
    store = ObjectStore(settings.storage)
    try:
        lr = await CatalogSlides(Catalog(database(client, settings.mongo)), store).open(exam_id, slide_number)
        geometry = lr.geometry
        chunks = plan_chunks(geometry, scale, chunk_tiles or settings.compute.wholeslide_chunk_tiles)
        job = job_id or uuid.uuid5(_JOB_NAMESPACE, f"{exam_id}/{slide_number}/x{scale}")
        requests = chunk_requests(exam_id, slide_number, scale, priority, chunks, job)
        tracker = ProgressTracker({r.request_id: {(t.level, t.col, t.row) for t in r.tiles or []}
                                   for r, _ in requests})
        log.info("wholeslide.started", exam_id=exam_id, slide_number=slide_number, scale=scale,
                 tiles=tracker.total, requests=len(requests), priority=priority.value)
        async with UpscaleClient(settings) as upscale:
            expected = upscale.expect(r.request_id for r, _ in requests)
            await upscale.send(requests)
            await asyncio.wait_for(_follow(expected.answers(), tracker, on_progress), timeout_s)
        compute_s = tracker.progress().elapsed_s
        if tracker.failures:
            raise UpscaleError(tracker.failures)

        t0 = time.monotonic()
        cache = S3TileCache.from_store(store)
        level = geometry.top_level(scale)
        width, height = geometry.width * scale, geometry.height * scale
        cols, _ = geometry.grid(scale, level)
        key = hr_slide_key(exam_id, slide_number, scale)
        with tempfile.TemporaryDirectory(prefix="wholeslide-") as tmp, \
                ThreadPoolExecutor(max_workers=8, thread_name_prefix="hr-fetch") as pool:
            path = Path(tmp) / HR_SLIDE_NAME
            fetch_row = _row_fetcher(cache, pool, exam_id, slide_number, scale, level, cols)
            await asyncio.to_thread(
                write_hr_pyramid, path, width, height, fetch_row,
                mpp=lr.mpp / scale if lr.mpp else None,
                magnification=lr.magnification * scale if lr.magnification else None,
                compression=compression,
                metadata={"exam_id": exam_id, "slide_number": slide_number, "scale": scale,
                          "model": ",".join(sorted(tracker.models))},
            )
            ref = store.ref(StorageTier.TEMPORARY, key)
            await store.put_file(ref, path, content_type="image/tiff")
            local = None
            if output is not None:
                output.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(lambda: output.write_bytes(path.read_bytes()))
                local = output
        stitch_s = time.monotonic() - t0
        log.info("wholeslide.done", exam_id=exam_id, slide_number=slide_number, scale=scale, tiles=tracker.total,
                 computed=tracker.computed, compute_s=round(compute_s, 1), stitch_s=round(stitch_s, 1))
        return WholeSlideResult(ref, local, width, height, tracker.total, tracker.computed, compute_s, stitch_s)
    finally:
        await client.close()
        store.close()


async def _follow(answers: AsyncIterator[Answer], tracker: ProgressTracker,
                  on_progress: Callable[[Progress], None] | None) -> None:
    last_decile = -1
    async for answer in answers:
        if not tracker.feed(answer):
            continue
        progress = tracker.progress()
        if on_progress is not None:
            on_progress(progress)
        decile = int(progress.fraction * 10)
        if decile != last_decile:
            last_decile = decile
            log.info("wholeslide.progress", done=progress.done, failed=progress.failed, total=progress.total,
                     eta_s=None if progress.eta_s is None else round(progress.eta_s))
        if tracker.finished:
            return


def _row_fetcher(cache: object, pool: ThreadPoolExecutor, exam_id: str, slide_number: int, scale: int,
                 level: int, cols: int) -> Callable[[int], list[np.ndarray]]:
    """Tiles of one row fetched in parallel (ranged S3 GETs are latency-bound)."""

    def fetch(col: int, row: int) -> np.ndarray:
        data = cache.get_sync(hr_tile_key(exam_id, slide_number, scale, level, col, row))  # type: ignore[attr-defined]  # S3TileCache, passed as object
        if data is None:
            raise FileNotFoundError(f"HR tile ({col}, {row}) vanished from the hr-cache before stitching")
        tile = decode_png(data)
        if tile.shape[0] > TILE_SIZE or tile.shape[1] > TILE_SIZE:
            raise ValueError(f"HR tile ({col}, {row}) is {tile.shape[1]}x{tile.shape[0]}, larger than a tile")
        return tile

    def fetch_row(row: int) -> list[np.ndarray]:
        return list(pool.map(fetch, range(cols), [row] * cols))

    return fetch_row
