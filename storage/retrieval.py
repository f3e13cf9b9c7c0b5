"""The retrieve function of SPEC 2, for the viewer, export and other services.

* Find images by patient ID, exam ID, slide number and state.
* LR: the image's record and a ranged-GET reader on its tier (tiles without downloading).
* HR: tiles of the x``scale`` Deep Zoom pyramid (layout in ``schemas.layout``). Tiles already
  in the hr-cache are returned at once; missing ones are requested from the compute service
  (``upscale.requested``, interactive priority by default) and awaited until a timeout.
  Without an answer the caller gets the LR image and a status saying why.

Every retrieval is recorded: the image's access count and time (input of the tiering
usage rule) and an audit entry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal
from uuid import UUID

import structlog

from catalog.errors import PermanentError, UnknownExam, UnknownImage, UnknownPatient
from catalog.repository import Catalog
from core.upscale_client import UpscaleGateway
from schemas.catalog import AuditEntry, ImageRecord, db_now
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import Region, TileRef, UpscaleDone, UpscaleFailed, UpscaleRequested
from schemas.layout import ALLOWED_SCALES, TILE_SIZE, dzi_max_level, hr_tile_key, sr_levels, tile_grid
from schemas.topics import Priority
from storage.objects import ObjectStore
from storage.range_reader import S3RangeReader

log = structlog.get_logger(__name__)

HrStatus = Literal["cached", "computed", "partial", "timeout", "failed", "unavailable"]


class InvalidTileRequest(PermanentError):
    pass


@dataclass
class HrResult:
    """HR tiles found or computed, and the LR image to fall back on."""

    status: HrStatus
    lr: ImageRecord
    scale: int
    tiles: dict[TileRef, ObjectRef] = field(default_factory=dict)
    missing: list[TileRef] = field(default_factory=list)
    request_id: UUID | None = None
    detail: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing


def hr_size(lr: ImageRecord, scale: int) -> tuple[int, int]:
    if lr.width is None or lr.height is None:
        raise InvalidTileRequest(f"exam {lr.exam_id} slide {lr.slide_number} has no recorded LR size")
    return lr.width * scale, lr.height * scale


def check_tiles(lr: ImageRecord, scale: int, tiles: list[TileRef]) -> None:
    """Tiles must exist in the x``scale`` pyramid and lie on a level that needs SR (lower
    levels are plain downsamples of the LR pyramid, served from LR)."""
    if scale not in ALLOWED_SCALES:
        raise InvalidTileRequest(f"scale {scale} is not one of {ALLOWED_SCALES}")
    if not tiles:
        raise InvalidTileRequest("no tiles requested")
    width, height = hr_size(lr, scale)
    levels = sr_levels(lr.width or 0, lr.height or 0, scale)
    for tile in tiles:
        if tile.level not in levels:
            raise InvalidTileRequest(f"level {tile.level} is not a super-resolution level "
                                     f"({levels.start}..{levels.stop - 1}) of this slide at x{scale}")
        cols, rows = tile_grid(width, height, tile.level)
        if tile.col >= cols or tile.row >= rows:
            raise InvalidTileRequest(f"tile {tile.col},{tile.row} is outside level {tile.level} "
                                     f"({cols}x{rows} tiles)")


def tiles_for_region(lr: ImageRecord, scale: int, region: Region) -> list[TileRef]:
    """Tiles of the full-resolution HR level covering ``region`` (level-0 HR pixels)."""
    width, height = hr_size(lr, scale)
    level = dzi_max_level(width, height)
    cols, rows = tile_grid(width, height, level)
    first_col, first_row = region.x // TILE_SIZE, region.y // TILE_SIZE
    last_col = min(cols - 1, (region.x + region.width - 1) // TILE_SIZE)
    last_row = min(rows - 1, (region.y + region.height - 1) // TILE_SIZE)
    return [TileRef(level=level, col=c, row=r) for r in range(first_row, last_row + 1)
            for c in range(first_col, last_col + 1)]


class RetrievalService:
    def __init__(self, catalog: Catalog, store: ObjectStore, gateway: UpscaleGateway | None = None, *,
                 timeout_s: float = 30.0, probe_concurrency: int = 16) -> None:
        self.catalog = catalog
        self.store = store
        self.gateway = gateway
        self.timeout_s = timeout_s
        self._probe = asyncio.Semaphore(probe_concurrency)

    # --- search ------------------------------------------------------------------------

    async def find(self, *, patient_id: str | None = None, exam_id: str | None = None,
                   slide_number: int | None = None, state: ImageState | int | None = None) -> list[ImageRecord]:
        """Images matching the IDs; UnknownPatient / UnknownExam if the parent does not exist
        (so "no such exam" and "exam without images" are told apart)."""
        if exam_id is not None and await self.catalog.get_exam(exam_id) is None:
            raise UnknownExam(exam_id)
        if patient_id is not None and exam_id is None and await self.catalog.get_patient(patient_id) is None:
            raise UnknownPatient()
        return await self.catalog.find_images(patient_id=patient_id, exam_id=exam_id,
                                              slide_number=slide_number, state=state)

    # --- LR ----------------------------------------------------------------------------

    async def lr(self, exam_id: str, slide_number: int, *, actor: str) -> ImageRecord:
        """The LR image record (its tier object is ``record.object``); access recorded."""
        image = await self.catalog.get_image(exam_id, slide_number, ImageState.LR)
        if image is None:
            if await self.catalog.get_exam(exam_id) is None:
                await self._audit(actor, "retrieve", exam_id, slide_number, 0, "not_found")
                raise UnknownExam(exam_id)
            await self._audit(actor, "retrieve", exam_id, slide_number, 0, "not_found")
            raise UnknownImage(exam_id, slide_number, 0)
        await self.catalog.record_access(image)
        await self._audit(actor, "retrieve", exam_id, slide_number, 0, "ok", tier=image.tier.value)
        return image

    def lr_reader(self, image: ImageRecord) -> S3RangeReader:
        """Ranged-GET reader on the LR object (blocking: use it from a worker thread)."""
        return self.store.range_reader(image.object, size=image.size_bytes)

    async def lr_bytes(self, exam_id: str, slide_number: int, *, actor: str) -> tuple[ImageRecord, bytes]:
        image = await self.lr(exam_id, slide_number, actor=actor)
        return image, await self.store.get_bytes(image.object)

    # --- HR ----------------------------------------------------------------------------

    async def cached_tiles(self, exam_id: str, slide_number: int, scale: int,
                           tiles: list[TileRef]) -> dict[TileRef, ObjectRef]:
        async def probe(tile: TileRef) -> tuple[TileRef, ObjectRef | None]:
            ref = self.store.ref(StorageTier.TEMPORARY,
                                 hr_tile_key(exam_id, slide_number, scale, tile.level, tile.col, tile.row))
            async with self._probe:
                return tile, ref if await self.store.exists(ref) else None

        found = await asyncio.gather(*(probe(tile) for tile in tiles))
        return {tile: ref for tile, ref in found if ref is not None}

    async def hr_tiles(self, exam_id: str, slide_number: int, scale: int, tiles: list[TileRef], *, actor: str,
                       priority: Priority = Priority.INTERACTIVE, timeout_s: float | None = None,
                       requested_by: str | None = None) -> HrResult:
        lr = await self.lr(exam_id, slide_number, actor=actor)
        tiles = list(dict.fromkeys(tiles))  # no duplicates, order kept
        check_tiles(lr, scale, tiles)
        found = await self.cached_tiles(exam_id, slide_number, scale, tiles)
        missing = [tile for tile in tiles if tile not in found]
        hr_record = await self.catalog.get_image(exam_id, slide_number, ImageState.HR)
        if hr_record is not None:
            await self.catalog.record_access(hr_record)
        if not missing:
            await self._audit(actor, "retrieve_hr", exam_id, slide_number, 1, "ok", status="cached",
                              tiles=len(tiles), missing=0)
            return HrResult("cached", lr, scale, found)
        if self.gateway is None:
            return HrResult("unavailable", lr, scale, found, missing, detail="no compute gateway configured")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        request = UpscaleRequested(exam_id=exam_id, slide_number=slide_number, scale=scale, priority=priority,
                                   tiles=missing, requested_by=requested_by,
                                   deadline=db_now() + timedelta(seconds=timeout))
        answer = await self.gateway.request(request, timeout)
        result = self._merge(lr, scale, found, missing, request, answer, timeout)
        await self._audit(actor, "retrieve_hr", exam_id, slide_number, 1,
                          "ok" if result.complete else "error", status=result.status, tiles=len(tiles),
                          missing=len(result.missing))
        return result

    def _merge(self, lr: ImageRecord, scale: int, found: dict[TileRef, ObjectRef], missing: list[TileRef],
               request: UpscaleRequested, answer: UpscaleDone | UpscaleFailed | None, timeout: float) -> HrResult:
        if answer is None:
            return HrResult("timeout", lr, scale, found, missing, request.request_id,
                            f"no upscale.done within {timeout:g} s; showing LR")
        if isinstance(answer, UpscaleFailed):
            return HrResult("failed", lr, scale, found, missing, request.request_id, answer.reason)
        tiles = dict(found)
        for result in answer.results:
            if result.tile in missing:
                tiles[result.tile] = result.object
        still = [tile for tile in missing if tile not in tiles]
        status: HrStatus = "computed" if not still else "partial"
        return HrResult(status, lr, scale, tiles, still, request.request_id,
                        "" if not still else f"{len(still)} tile(s) missing from upscale.done")

    async def _audit(self, actor: str, action: str, exam_id: str, slide_number: int, state: int, outcome: str,
                     **detail: str | int) -> None:
        await self.catalog.audit(AuditEntry(
            actor=actor, action=action, outcome=outcome,  # type: ignore[arg-type]  # outcome is one of the literals
            target={"exam_id": exam_id, "slide_number": slide_number, "state": state}, detail=detail))
