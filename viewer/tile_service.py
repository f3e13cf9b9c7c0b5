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
from compute.consistency_map import METADATA_KEY, parse_value
from compute.slides import CatalogSlides, LrSlide, UnknownSlide
from core.settings import ViewerSettings
from schemas.catalog import ImageRecord
from schemas.common import ImageState, StorageTier
from schemas.events import TileRef
from schemas.layout import hr_provenance_key, hr_scale_for, hr_tile_key
from schemas.topics import Priority
from storage.errors import is_missing
from storage.objects import ObjectStore
from viewer.deepzoom import TILE_FORMATS, SlideView, TileOutOfRange
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
    consistency_db: float | None = None  # computed tiles: agreement with the stored LR (compute.consistency)


@dataclass(frozen=True)
class _SlideEntry:
    """What every tile of a slide needs, looked up once per ``VIEW_TTL_S``."""

    until: float
    image: ImageRecord
    view: SlideView
    scanned: bool  # HR tiles cut from a real HR scan (provenance marker present)


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
        self._views: OrderedDict[tuple[str, int], _SlideEntry] = OrderedDict()
        self._max_views = max_views
        # LR cuts never change (a stored LR is immutable), so encoded ones are kept for re-reads.
        self._cuts = ByteLru(cut_cache_bytes)
        self._warming: set[asyncio.Task[LrSlide]] = set()

    async def view(self, exam_id: str, slide_number: int) -> tuple[ImageRecord, SlideView]:
        entry = await self._entry(exam_id, slide_number)
        return entry.image, entry.view

    async def scanned(self, exam_id: str, slide_number: int) -> bool:
        """True when the slide's HR tiles were cut from a real HR scan (not computed)."""
        return (await self._entry(exam_id, slide_number)).scanned

    async def _entry(self, exam_id: str, slide_number: int) -> _SlideEntry:
        key = (exam_id, slide_number)
        cached = self._views.get(key)
        if cached is not None and cached.until > time.monotonic():
            self._views.move_to_end(key)
            return cached
        image = await self.catalog.get_image(exam_id, slide_number, ImageState.LR)
        if image is None:
            if await self.catalog.get_exam(exam_id) is None:
                raise UnknownExam(exam_id)
            raise UnknownImage(exam_id, slide_number, int(ImageState.LR))
        if image.width is None or image.height is None:
            raise SlideUnavailable(f"slide {slide_number} of exam {exam_id} has no recorded size")
        view = SlideView(image.width, image.height,
                         hr_scale_for(image.magnification, self.settings.target_magnification), image.magnification)
        marker = self.store.ref(StorageTier.TEMPORARY, hr_provenance_key(exam_id, slide_number, view.scale))
        entry = _SlideEntry(time.monotonic() + VIEW_TTL_S, image, view, await self.store.exists(marker))
        self._views[key] = entry
        if len(self._views) > self._max_views:
            self._views.popitem(last=False)
        return entry

    async def _hr(self, exam_id: str, slide_number: int, entry: _SlideEntry, level: int, col: int,
                  row: int, viewer: str | None = None) -> Tile | None:
        """The hr-cache tile of an SR level, or None (then asked for, unless a scan fills it)."""
        view = entry.view
        cached = await self._hr_cached(exam_id, slide_number, view.scale, level, col, row)
        if cached is not None:
            body, metadata = cached
            if entry.scanned:
                return Tile(body, "image/png", "scanned")
            return Tile(body, "image/png", "computed", parse_value(metadata.get(METADATA_KEY)))
        if self.on_demand is not None and not entry.scanned:  # a scanned slide's tiles come from its scan
            self.on_demand.want(exam_id, slide_number, view.scale, TileRef(level=level, col=col, row=row),
                                viewer=viewer)
        return None

    async def tile(self, exam_id: str, slide_number: int, level: int, col: int, row: int, fmt: str, *,
                   lr_only: bool = False, viewer: str | None = None) -> Tile:
        """``viewer``: who asks (their tiles in flight are cancelled once they move away)."""
        media_type = TILE_FORMATS.get(fmt)
        if media_type is None:
            raise TileOutOfRange(f"tile format {fmt!r} is not one of {sorted(TILE_FORMATS)}")
        entry = await self._entry(exam_id, slide_number)
        entry.view.box(level, col, row)  # validates before any I/O
        from_lr = entry.view.kind(level) == "lr" or lr_only
        if not from_lr and (hr := await self._hr(exam_id, slide_number, entry, level, col, row, viewer)) is not None:
            return hr
        return Tile(await self._cut(exam_id, slide_number, entry.view, level, col, row, media_type),
                    media_type, "lr" if from_lr else "placeholder")

    async def pixels(self, exam_id: str, slide_number: int, level: int, col: int, row: int) -> tuple[np.ndarray, TileSource]:
        """A tile as pixels (for composing IIIF regions); same sources as ``tile``, without
        encoding LR cuts only to decode them again."""
        entry = await self._entry(exam_id, slide_number)
        entry.view.box(level, col, row)
        if entry.view.kind(level) == "sr" and (hr := await self._hr(exam_id, slide_number, entry, level, col,
                                                                    row)) is not None:
            return await asyncio.to_thread(decode, hr.body), hr.source
        source: TileSource = "lr" if entry.view.kind(level) == "lr" else "placeholder"
        return await self._cut_pixels(exam_id, slide_number, entry.view, level, col, row), source

    async def prefetch(self, exam_id: str, slide_number: int, tiles: list[TileRef], priority: Priority,
                       viewer: str | None = None) -> int:
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
        return sum(self.on_demand.want(exam_id, slide_number, view.scale, tile, priority, viewer=viewer)
                   for tile, hit in zip(tiles, present, strict=True) if not hit)

    async def view_moved(self, viewer: str, exam_id: str, slide_number: int, tiles: list[TileRef]) -> int:
        """``viewer`` now wants ``tiles``; in-flight tiles no viewer wants are cancelled."""
        if self.on_demand is None:
            return 0
        _, view = await self.view(exam_id, slide_number)
        return await self.on_demand.view_moved(viewer, exam_id, slide_number, view.scale, tiles)

    async def _hr_cached(self, exam_id: str, slide_number: int, scale: int, level: int, col: int,
                         row: int) -> tuple[bytes, dict[str, str]] | None:
        """The tile and its user metadata (the compute service's consistency value)."""
        ref = self.store.ref(StorageTier.TEMPORARY, hr_tile_key(exam_id, slide_number, scale, level, col, row))
        try:
            return await self.store.get_with_metadata(ref)  # one GET: a miss costs no more than a stat
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
        pixels = await self._cut_pixels(exam_id, slide_number, view, level, col, row)
        return await asyncio.to_thread(encode, pixels, media_type, self.settings.lr_tile_quality)

    async def _cut_pixels(self, exam_id: str, slide_number: int, view: SlideView, level: int, col: int,
                          row: int) -> np.ndarray:
        slide = await self._open(exam_id, slide_number)
        try:
            return await asyncio.to_thread(cut_tile, slide, view, level, col, row)
        except S3Error as exc:  # the LR moved tier meanwhile: look it up again next time
            self.slides.forget(exam_id, slide_number)
            self._views.pop((exam_id, slide_number), None)
            if is_missing(exc):
                raise SlideUnavailable(f"LR image of slide {slide_number} of exam {exam_id} moved; retry") from exc
            raise
