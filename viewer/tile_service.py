"""Tiles of a slide's Deep Zoom pyramid, from wherever they are:

* LR levels: cut from the stored LR pyramid with ranged reads (never the whole slide);
* super-resolution levels: the hr-cache tile if it is there (``computed``); otherwise the LR
  region upsampled at once (``placeholder``) while the tile is asked for on demand.

``Tile.source`` says which, and the API puts it in a header so that a reader always knows
whether a pixel was scanned, cut from the stored LR, or computed.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np
from minio.error import S3Error

from catalog.errors import UnknownExam, UnknownImage
from catalog.repository import Catalog
from compute.slides import CatalogSlides, LrSlide, UnknownSlide
from core.settings import ViewerSettings
from schemas.catalog import ImageRecord
from schemas.common import ImageState, StorageTier
from schemas.events import TileRef
from schemas.layout import hr_provenance_key, hr_tile_key
from schemas.topics import Priority
from storage.errors import is_missing
from storage.objects import ObjectStore
from viewer.deepzoom import TILE_FORMATS, SlideView, TileOutOfRange, choose_scale
from viewer.lr_tiles import cut_tile, decode, encode
from viewer.on_demand import OnDemand

TileSource = Literal["lr", "computed", "scanned", "placeholder"]
VIEW_TTL_S = 10.0  # a moved slide's record is looked up again after this long


class SlideUnavailable(LookupError):
    """The slide has no readable LR image (unknown, or its object is missing)."""


@dataclass(frozen=True)
class Tile:
    body: bytes
    media_type: str
    source: TileSource


class ByteLru:
    """Least-recently-used byte strings up to a total size."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._items: OrderedDict[object, bytes] = OrderedDict()

    def get(self, key: object) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: object, value: bytes) -> None:
        if len(value) > self.capacity:
            return
        old = self._items.pop(key, None)
        self.size += len(value) - (len(old) if old is not None else 0)
        self._items[key] = value
        while self.size > self.capacity:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped)


class TileService:
    def __init__(self, catalog: Catalog, store: ObjectStore, settings: ViewerSettings,
                 on_demand: OnDemand | None = None, *, slides: CatalogSlides | None = None,
                 max_views: int = 256, cut_cache_bytes: int = 64 << 20) -> None:
        self.catalog = catalog
        self.store = store
        self.settings = settings
        self.on_demand = on_demand
        self.slides = slides or CatalogSlides(catalog, store, capacity=32)
        self._views: OrderedDict[tuple[str, int], tuple[float, ImageRecord, SlideView, bool]] = OrderedDict()
        self._max_views = max_views
        # LR cuts never change (a stored LR is immutable), so encoded ones are kept for re-reads.
        self._cuts = ByteLru(cut_cache_bytes)
        self._warming: set[asyncio.Task[LrSlide]] = set()

    async def view(self, exam_id: str, slide_number: int) -> tuple[ImageRecord, SlideView]:
        key = (exam_id, slide_number)
        cached = self._views.get(key)
        if cached is not None and cached[0] > time.monotonic():
            self._views.move_to_end(key)
            return cached[1], cached[2]
        image, view, _ = await self._load_view(exam_id, slide_number)
        return image, view

    async def scanned(self, exam_id: str, slide_number: int) -> bool:
        """True when the slide's HR tiles were cut from a real HR scan (not computed)."""
        cached = self._views.get((exam_id, slide_number))
        if cached is not None and cached[0] > time.monotonic():
            return cached[3]
        return (await self._load_view(exam_id, slide_number))[2]

    async def _load_view(self, exam_id: str, slide_number: int) -> tuple[ImageRecord, SlideView, bool]:
        key = (exam_id, slide_number)
        image = await self.catalog.get_image(exam_id, slide_number, ImageState.LR)
        if image is None:
            if await self.catalog.get_exam(exam_id) is None:
                raise UnknownExam(exam_id)
            raise UnknownImage(exam_id, slide_number, int(ImageState.LR))
        if image.width is None or image.height is None:
            raise SlideUnavailable(f"slide {slide_number} of exam {exam_id} has no recorded size")
        view = SlideView(image.width, image.height,
                         choose_scale(image.magnification, self.settings.target_magnification),
                         image.magnification)
        marker = self.store.ref(StorageTier.TEMPORARY, hr_provenance_key(exam_id, slide_number, view.scale))
        scanned = await self.store.exists(marker)
        self._views[key] = (time.monotonic() + VIEW_TTL_S, image, view, scanned)
        if len(self._views) > self._max_views:
            self._views.popitem(last=False)
        return image, view, scanned

    async def tile(self, exam_id: str, slide_number: int, level: int, col: int, row: int, fmt: str, *,
                   lr_only: bool = False) -> Tile:
        media_type = TILE_FORMATS.get(fmt)
        if media_type is None:
            raise TileOutOfRange(f"tile format {fmt!r} is not one of {sorted(TILE_FORMATS)}")
        _, view = await self.view(exam_id, slide_number)
        view.box(level, col, row)  # validates before any I/O
        if view.kind(level) == "lr" or lr_only:
            return Tile(await self._cut(exam_id, slide_number, view, level, col, row, media_type),
                        media_type, "lr")
        cached = await self._hr_cached(exam_id, slide_number, view.scale, level, col, row)
        scanned = await self.scanned(exam_id, slide_number)
        if cached is not None:
            return Tile(cached, "image/png", "scanned" if scanned else "computed")
        if self.on_demand is not None and not scanned:  # a scanned slide's tiles come from its scan
            self.on_demand.want(exam_id, slide_number, view.scale, TileRef(level=level, col=col, row=row))
        return Tile(await self._cut(exam_id, slide_number, view, level, col, row, media_type),
                    media_type, "placeholder")

    async def pixels(self, exam_id: str, slide_number: int, level: int, col: int, row: int, *,
                     lr_only: bool = False) -> tuple[np.ndarray, TileSource]:
        """A tile as pixels (for composing IIIF regions); same sources as ``tile``."""
        tile = await self.tile(exam_id, slide_number, level, col, row, "png", lr_only=lr_only)
        pixels = await asyncio.to_thread(decode, tile.body)
        return pixels, tile.source

    async def prefetch(self, exam_id: str, slide_number: int, tiles: list[TileRef], priority: Priority) -> int:
        """Ask for those of ``tiles`` not in the hr-cache; how many were asked for."""
        if self.on_demand is None or not tiles:
            return 0
        _, view = await self.view(exam_id, slide_number)
        checks = asyncio.Semaphore(16)

        async def cached(tile: TileRef) -> bool:
            ref = self.store.ref(StorageTier.TEMPORARY,
                                 hr_tile_key(exam_id, slide_number, view.scale, tile.level, tile.col, tile.row))
            async with checks:
                return await self.store.exists(ref)

        present = await asyncio.gather(*(cached(tile) for tile in tiles))
        return sum(self.on_demand.want(exam_id, slide_number, view.scale, tile, priority)
                   for tile, hit in zip(tiles, present, strict=True) if not hit)

    async def _hr_cached(self, exam_id: str, slide_number: int, scale: int, level: int, col: int,
                         row: int) -> bytes | None:
        ref = self.store.ref(StorageTier.TEMPORARY, hr_tile_key(exam_id, slide_number, scale, level, col, row))
        try:
            return await self.store.get_object(ref)  # one GET: a miss costs no more than a stat
        except S3Error as exc:
            if is_missing(exc):
                return None
            raise

    async def _open(self, exam_id: str, slide_number: int) -> LrSlide:
        try:
            return await self.slides.open(exam_id, slide_number)
        except UnknownSlide as exc:
            raise SlideUnavailable(str(exc)) from exc

    def warm(self, exam_id: str, slide_number: int) -> None:
        """Open the LR slide in the background (when a browser opens a slide, before its tiles)."""
        task = asyncio.get_running_loop().create_task(self._open(exam_id, slide_number))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failure shows on the tile requests

    async def _cut(self, exam_id: str, slide_number: int, view: SlideView, level: int, col: int, row: int,
                   media_type: str) -> bytes:
        key = (exam_id, slide_number, level, col, row, media_type)
        cached = self._cuts.get(key)
        if cached is not None:
            return cached
        body = await self._cut_uncached(exam_id, slide_number, view, level, col, row, media_type)
        self._cuts.put(key, body)
        return body

    async def _cut_uncached(self, exam_id: str, slide_number: int, view: SlideView, level: int, col: int, row: int,
                            media_type: str) -> bytes:
        slide = await self._open(exam_id, slide_number)

        def work() -> bytes:
            return encode(cut_tile(slide, view, level, col, row), media_type, self.settings.lr_tile_quality)

        try:
            return await asyncio.to_thread(work)
        except S3Error as exc:  # the LR moved tier meanwhile: look it up again next time
            self.slides.forget(exam_id, slide_number)
            self._views.pop((exam_id, slide_number), None)
            if is_missing(exc):
                raise SlideUnavailable(f"LR image of slide {slide_number} of exam {exam_id} moved; retry") from exc
            raise
