"""HR scans kept by QC become hr-cache tiles, so a slide scanned at 40x is read as *scanned*
40x, not recomputed from its 5x LR (SPEC 2: the HR scan is an hr-cache candidate).

The scan (in the ingest bucket) is cut into the Deep Zoom tiles of the slide's x``scale`` HR
pyramid (``schemas.layout``: the geometry the viewer and the compute service share), each
resampled from the scan level nearest above it; a provenance marker says the tiles are
scanned. Idempotent: a slide whose marker exists is not cut again. The compute service finds
the tiles in the cache and never recomputes them. The marker is written first (``cutting``),
so that a viewer never labels a scan-cut tile computed nor asks compute for the slide, and
rewritten ``complete`` at the end. Then the scan may leave the ingest bucket
(``storage.ingest_release``: deleted here if the slide is saved, else by the save); a
redelivered event whose scan is already gone with the slide saved has nothing left to do.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from minio.error import S3Error
from PIL import Image

from catalog.errors import UnknownExam
from catalog.provenance import check_scan_upload
from catalog.repository import Catalog
from schemas.catalog import ImageRecord, db_now
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import SlideQcPassed
from schemas.layout import (
    HR_TILE_FORMAT,
    TILE_SIZE,
    dzi_max_level,
    hr_prefix,
    hr_provenance_key,
    hr_scale_for,
    hr_tile_key,
    level_size,
    sr_levels,
    tile_grid,
)
from slide_io.readers import open_slide
from slide_io.source import SlideSource
from storage.errors import MissingObject, is_missing
from storage.ingest_release import IngestRelease
from storage.objects import ObjectStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ScanTile:
    """One HR tile and the scan rectangle (level-0 pixels of the scan) it shows."""

    level: int
    col: int
    row: int
    width: int
    height: int
    x: float
    y: float
    span_x: float
    span_y: float


def scanned_tiles(lr_width: int, lr_height: int, scale: int, scan_width: int, scan_height: int) -> Iterator[ScanTile]:
    """Every tile of the super-resolution levels of the x``scale`` pyramid, mapped onto the scan
    (whose level 0 is about the LR times QC's downsample; any small rounding is absorbed)."""
    width, height = lr_width * scale, lr_height * scale
    top = dzi_max_level(width, height)
    for level in sr_levels(lr_width, lr_height, scale):
        lw, lh = level_size(width, height, level)
        fx, fy = scan_width / (width / 2 ** (top - level)), scan_height / (height / 2 ** (top - level))
        cols, rows = tile_grid(width, height, level)
        for row in range(rows):
            for col in range(cols):
                tw, th = min(TILE_SIZE, lw - col * TILE_SIZE), min(TILE_SIZE, lh - row * TILE_SIZE)
                yield ScanTile(level, col, row, tw, th, col * TILE_SIZE * fx, row * TILE_SIZE * fy, tw * fx, th * fy)


def cut_tile(scan: SlideSource, tile: ScanTile) -> np.ndarray:
    downsample = min(tile.span_x / tile.width, tile.span_y / tile.height)
    level = scan.best_level_for_downsample(max(1.0, downsample))
    d = scan.level_downsamples[level]
    x0, y0 = math.floor(tile.x / d), math.floor(tile.y / d)
    x1, y1 = math.ceil((tile.x + tile.span_x) / d), math.ceil((tile.y + tile.span_y) / d)
    pixels = scan.read_region(level, x0, y0, max(1, x1 - x0), max(1, y1 - y0))
    if pixels.shape[:2] == (tile.height, tile.width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((tile.width, tile.height), Image.Resampling.LANCZOS))


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=3)
    return out.getvalue()


@dataclass(frozen=True)
class ScannedHr:
    scale: int
    tiles: int
    seconds: float
    already: bool = False


class ScannedHrCutter:
    def __init__(self, catalog: Catalog, store: ObjectStore, *, target_magnification: float,
                 concurrency: int = 8, release: IngestRelease | None = None) -> None:
        self.catalog = catalog
        self.store = store
        self.release = release or IngestRelease(catalog, store)
        self.target_magnification = target_magnification
        self._puts = asyncio.Semaphore(concurrency)

    async def cut(self, event: SlideQcPassed) -> ScannedHr | None:
        """The slide's HR tiles from its kept scan; None when QC kept no scan."""
        if event.hr_candidate is None:
            return None
        check_scan_upload(event.hr_candidate, self.store.bucket("ingest"), event.exam_id, event.slide_number)
        scale = hr_scale_for(event.magnification, self.target_magnification)
        marker = self.store.ref(StorageTier.TEMPORARY, hr_provenance_key(event.exam_id, event.slide_number, scale))
        if await self._status(marker) == "complete":
            await self.release.release(event)  # a crash may have come between the cut and this
            return ScannedHr(scale, 0, 0.0, already=True)
        if not await self.store.exists(event.hr_candidate) and await self.release.is_saved(event):
            # Released after its cut (whose tiles have since been dropped), or expired: the
            # slide is saved and there is nothing to cut any more; no "cutting" marker is left.
            log.info("hr_scan.scan_gone", exam_id=event.exam_id, slide=event.slide_number)
            return None
        started = time.perf_counter()
        # Provenance first: from now on a viewer labels this slide's HR tiles scanned and does
        # not ask compute for them (the cut fills them in).
        await self._mark(marker, event, scale, "cutting")
        with tempfile.TemporaryDirectory(prefix="hr-scan-") as work:
            path = Path(work) / Path(event.hr_candidate.key).name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                await self.store.download_to_fd(event.hr_candidate, fd)  # takes the descriptor over
            except S3Error as exc:
                if is_missing(exc):
                    raise MissingObject(event.hr_candidate, "HR scan") from None
                raise
            tiles = await self._cut_file(path, event, scale)
        if await self._status(marker) != "cutting":
            # The slide's HR was dropped while we cut (a discharge empties the hr-cache): the
            # tiles written after that would stay as a partial set under a marker claiming a
            # complete scan, and nothing would ever fill the rest. Drop them too; compute
            # fills the slide if it is read again.
            await self.store.delete_prefix(marker.bucket, hr_prefix(event.exam_id, event.slide_number, scale))
            if (await self.release.release(event)).saved:
                await self.store.delete(event.hr_candidate)  # dropped HR is not cut again (a redelivery finds it gone)
            log.warning("hr_scan.dropped_while_cutting", exam_id=event.exam_id, slide=event.slide_number)
            return None
        await self._mark(marker, event, scale, "complete", tiles=tiles)
        await self._record(event, scale)
        await self.release.release(event)
        seconds = time.perf_counter() - started
        log.info("hr_scan.cut", exam_id=event.exam_id, slide=event.slide_number, scale=scale, tiles=tiles,
                 seconds=round(seconds, 1))
        return ScannedHr(scale, tiles, seconds)

    async def _status(self, marker: ObjectRef) -> str | None:
        try:
            return str(json.loads(await self.store.get_object(marker)).get("status"))
        except (S3Error, ValueError) as exc:
            if isinstance(exc, S3Error) and not is_missing(exc):
                raise
            return None

    async def _mark(self, marker: ObjectRef, event: SlideQcPassed, scale: int, status: str, **extra: int) -> None:
        assert event.hr_candidate is not None
        body = {"source": "scanned", "status": status, "scale": scale, "at": db_now().isoformat(),
                "scan": f"{event.hr_candidate.bucket}/{event.hr_candidate.key}", **extra}
        await self.store.put_bytes(marker, json.dumps(body).encode(), content_type="application/json")

    async def _cut_file(self, path: Path, event: SlideQcPassed, scale: int) -> int:
        scan = await asyncio.to_thread(open_slide, path)
        try:
            scan_w, scan_h = scan.dimensions
            pending: set[asyncio.Task[None]] = set()
            count = 0
            for tile in scanned_tiles(event.width, event.height, scale, scan_w, scan_h):
                body = await asyncio.to_thread(lambda t=tile: png(cut_tile(scan, t)))
                ref = self.store.ref(StorageTier.TEMPORARY, hr_tile_key(event.exam_id, event.slide_number, scale,
                                                                        tile.level, tile.col, tile.row))
                await self._puts.acquire()
                task = asyncio.create_task(self._put(ref, body))
                pending.add(task)
                task.add_done_callback(pending.discard)
                count += 1
            await asyncio.gather(*pending)
            return count
        finally:
            scan.close()

    async def _put(self, ref: ObjectRef, body: bytes) -> None:
        try:
            await self.store.put_bytes(ref, body, content_type=f"image/{HR_TILE_FORMAT}")
        finally:
            self._puts.release()

    async def _record(self, event: SlideQcPassed, scale: int) -> None:
        """The slide's HR catalog entry (tiering evicts HR by it), as compute's answers make it."""
        prefix = ObjectRef(bucket=self.store.bucket(StorageTier.TEMPORARY),
                           key=hr_prefix(event.exam_id, event.slide_number))
        record = ImageRecord(
            exam_id=event.exam_id, patient_id=event.patient_id, slide_number=event.slide_number,
            state=ImageState.HR, tier=StorageTier.TEMPORARY, object=prefix, acquired_at=db_now(),
            width=event.width * scale, height=event.height * scale,
            magnification=event.magnification * scale if event.magnification else None)
        try:
            await self.catalog.put_hr_image(record)
        except UnknownExam:  # the save agent has not stored the exam yet; the next HR answer records it
            log.info("hr_scan.no_exam_yet", exam_id=event.exam_id, slide=event.slide_number)
