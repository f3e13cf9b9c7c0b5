"""Tiles of a slide's Deep Zoom pyramid, from wherever they are:

* LR levels: cut from the stored LR pyramid with ranged reads (never the whole slide);
* super-resolution levels: the hr-cache tile if it is there (``computed``); otherwise the LR
  region upsampled at once (``placeholder``) while the tile is asked for on demand.

``Tile.source`` says which, and the API puts it in a header so that a reader always knows
whether a pixel was scanned, cut from the stored LR, or computed.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import numpy as np
from minio.error import S3Error

from catalog.errors import UnknownExam, UnknownImage
from catalog.repository import Catalog
from compute.consistency_map import METADATA_KEY, parse_value
from compute.slides import CatalogSlides, LrSlide, UnknownSlide
from core.settings import ViewerSettings
from core.upscale_client import Answer
from schemas.catalog import ImageRecord
from schemas.common import ImageState, StorageTier
from schemas.events import TileRef, UpscaleDone
from schemas.layout import hr_provenance_key, hr_scale_for, hr_tile_key, tile_grid
from schemas.topics import Priority
from storage.errors import is_missing
from storage.objects import ObjectStore
from viewer.deepzoom import TILE_FORMATS, SlideView, TileOutOfRange
from viewer.expiring import Expiring, Flights
from viewer.live import TileNewsHub
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

    image: ImageRecord
    view: SlideView
    scanned: bool  # HR tiles cut from a real HR scan (provenance marker present)


V = TypeVar("V")


class ByteLru(Generic[V]):
    """Least-recently-used values up to a total size in bytes (``size_of`` each)."""

    def __init__(self, capacity: int, size_of: Callable[[V], int] = len) -> None:  # type: ignore[assignment]  # len fits bytes
        self.capacity = capacity
        self.size = 0
        self._size_of = size_of
        self._items: OrderedDict[object, V] = OrderedDict()

    def get(self, key: object) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: object, value: V) -> None:
        if self._size_of(value) > self.capacity:
            return
        self.drop(key)
        self.size += self._size_of(value)
        self._items[key] = value
        while self.size > self.capacity:
            _, dropped = self._items.popitem(last=False)
            self.size -= self._size_of(dropped)

    def drop(self, key: object) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= self._size_of(old)


class TileService:
    def __init__(self, catalog: Catalog, store: ObjectStore, settings: ViewerSettings,
                 on_demand: OnDemand | None = None, *, slides: CatalogSlides | None = None,
                 max_views: int = 256, cut_cache_bytes: int = 64 << 20, hr_memory_bytes: int = 128 << 20,
                 hub: TileNewsHub | None = None, precut_tiles: int = 0) -> None:
        """``hub``: tiles computed for a slide someone has open are read into memory when
        their answer arrives, before the browser (told by the same answer) asks for them.
        ``precut_tiles``: LR tiles cut ahead when a slide is opened (``_warm``)."""
        self.catalog = catalog
        self.store = store
        self.settings = settings
        self.on_demand = on_demand
        self.slides = slides or CatalogSlides(catalog, store, capacity=32)
        self._views: Expiring[tuple[str, int], _SlideEntry] = Expiring(VIEW_TTL_S, max_items=max_views)
        # LR cuts never change (a stored LR is immutable), so encoded ones are kept for re-reads.
        self._cuts: ByteLru[bytes] = ByteLru(cut_cache_bytes)
        # hr-cache tiles most recently read or computed, so a tile on several screens (or
        # prefetched, or just announced) costs no object-store round trip. Dropped when an
        # answer says a tile was written again.
        self._hr_memory: ByteLru[Tile] = ByteLru(hr_memory_bytes, lambda tile: len(tile.body))
        self.hub = hub
        self._hr_reading: Flights[tuple[str, int, int, int, int, int, bool], Tile | None] = Flights()
        self._cutting: Flights[tuple[str, int, int, int, int, str], bytes] = Flights()
        self.precut_tiles = precut_tiles
        self._background: set[asyncio.Task[None]] = set()  # warm-ups and read-aheads, cancelled at close

    async def view(self, exam_id: str, slide_number: int) -> tuple[ImageRecord, SlideView]:
        entry = await self._entry(exam_id, slide_number)
        return entry.image, entry.view

    async def scanned(self, exam_id: str, slide_number: int) -> bool:
        """True when the slide's HR tiles were cut from a real HR scan (not computed)."""
        return (await self._entry(exam_id, slide_number)).scanned

    async def _entry(self, exam_id: str, slide_number: int) -> _SlideEntry:
        return await self._views.get((exam_id, slide_number), lambda: self._load_entry(exam_id, slide_number))

    async def _load_entry(self, exam_id: str, slide_number: int) -> _SlideEntry:
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
        return _SlideEntry(image, view, await self.store.exists(marker))

    async def _hr(self, exam_id: str, slide_number: int, entry: _SlideEntry, level: int, col: int,
                  row: int, viewer: str | None = None) -> Tile | None:
        """The hr-cache tile of an SR level, or None (then asked for, unless a scan fills it)."""
        view = entry.view
        tile = await self._hr_tile(exam_id, slide_number, view.scale, TileRef(level=level, col=col, row=row),
                                   entry.scanned)
        if tile is not None:
            return tile
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
        entry = await self._entry(exam_id, slide_number)
        view = entry.view
        checks = asyncio.Semaphore(16)

        async def cached(tile: TileRef) -> bool:
            # A GET where a stat would do: a miss costs the same, and a hit is then in memory
            # when the pan reaches it.
            async with checks:
                return await self._hr_tile(exam_id, slide_number, view.scale, tile, entry.scanned) is not None

        present = await asyncio.gather(*(cached(tile) for tile in tiles))
        return sum(self.on_demand.want(exam_id, slide_number, view.scale, tile, priority, viewer=viewer)
                   for tile, hit in zip(tiles, present, strict=True) if not hit)

    async def view_moved(self, viewer: str, exam_id: str, slide_number: int, tiles: list[TileRef]) -> int:
        """``viewer`` now wants ``tiles``; in-flight tiles no viewer wants are cancelled."""
        if self.on_demand is None:
            return 0
        _, view = await self.view(exam_id, slide_number)
        return await self.on_demand.view_moved(viewer, exam_id, slide_number, view.scale, tiles)

    async def _hr_tile(self, exam_id: str, slide_number: int, scale: int, ref: TileRef,
                       scanned: bool) -> Tile | None:
        """The hr-cache tile, from memory or the object store (then kept in memory)."""
        key = (exam_id, slide_number, scale, ref.level, ref.col, ref.row)
        kept = self._hr_memory.get(key)
        if kept is not None and (kept.source == "scanned") == scanned:  # a scan replaces computed tiles
            return kept
        # One GET per tile however many ask at once (an answer's read-ahead, the browser); a read
        # labels its tile scanned or computed, so one flight per label.
        return await self._hr_reading.run((*key, scanned), lambda: self._hr_read(key, scanned))

    async def _hr_read(self, key: tuple[str, int, int, int, int, int], scanned: bool) -> Tile | None:
        cached = await self._hr_cached(*key)
        if cached is None:
            return None
        body, metadata = cached
        tile = (Tile(body, "image/png", "scanned") if scanned
                else Tile(body, "image/png", "computed", parse_value(metadata.get(METADATA_KEY))))
        self._hr_memory.put(key, tile)
        return tile

    def on_answer(self, answer: Answer) -> None:
        """Listener of the upscale client (every answer): a tile written again is dropped from
        memory; tiles of a slide that a browser has open are read into memory right away."""
        if not isinstance(answer, UpscaleDone):
            return
        tiles = [result.tile for result in answer.results]
        for tile in tiles:
            self._hr_memory.drop((answer.exam_id, answer.slide_number, answer.scale, tile.level, tile.col, tile.row))
        if self.hub is None or not tiles or not self.hub.subscribers(answer.exam_id, answer.slide_number):
            return
        self._in_background(self._load(answer.exam_id, answer.slide_number, answer.scale, tiles))

    async def _load(self, exam_id: str, slide_number: int, scale: int, tiles: list[TileRef]) -> None:
        entry = await self._entry(exam_id, slide_number)
        if entry.view.scale != scale:
            return
        reads = asyncio.Semaphore(8)

        async def one(tile: TileRef) -> None:
            async with reads:
                await self._hr_tile(exam_id, slide_number, scale, tile, entry.scanned)

        await asyncio.gather(*(one(tile) for tile in tiles))

    def _in_background(self, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` unawaited; a failure shows on the tile requests that follow."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

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
        """Open the LR slide and cut its overview in the background (when a browser opens a
        slide, before it asks for tiles)."""
        self._in_background(self._warm(exam_id, slide_number))

    async def _warm(self, exam_id: str, slide_number: int) -> None:
        """The LR levels from the smallest up, whole, while they fit ``precut_tiles`` in all:
        the home view and the first zooms a reader sees (on a small slide, every LR level)
        are then cut before the browser asks for them."""
        await self._open(exam_id, slide_number)
        view = (await self._entry(exam_id, slide_number)).view
        budget = self.precut_tiles
        for level in range(view.lr_level + 1):
            cols, rows = tile_grid(view.width, view.height, level)
            budget -= cols * rows
            if budget < 0:
                break
            for row in range(rows):
                for col in range(cols):
                    await self._cut(exam_id, slide_number, view, level, col, row, TILE_FORMATS["jpeg"])

    async def _cut(self, exam_id: str, slide_number: int, view: SlideView, level: int, col: int, row: int,
                   media_type: str) -> bytes:
        key = (exam_id, slide_number, level, col, row, media_type)
        cached = self._cuts.get(key)
        if cached is not None:
            return cached
        # the overview being cut and a browser asking for the same tile: cut once
        body = await self._cutting.run(key, lambda: self._cut_uncached(exam_id, slide_number, view, level, col, row,
                                                                         media_type))
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
            self._views.forget((exam_id, slide_number))
            if is_missing(exc):
                raise SlideUnavailable(f"LR image of slide {slide_number} of exam {exam_id} moved; retry") from exc
            raise
