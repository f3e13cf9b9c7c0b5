"""LR slides by (exam, slide number): found through the catalog, read tile-wise from storage.

Only the TIFF header and the tiles a window overlaps are fetched (ranged GETs through
``slide_io.TiledTiff``), never the whole slide. Opened slides are kept in a small LRU; a
read that fails (the object moved to another tier meanwhile) drops the entry so the next
attempt looks the slide up again.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from compute.plan import SlideGeometry
from schemas.common import ImageState
from schemas.layout import lr_key
from slide_io import TiledTiff

if TYPE_CHECKING:
    from catalog.repository import Catalog
    from storage.objects import ObjectStore


class UnknownSlide(LookupError):
    """No LR image of this slide in the catalog (or in the store)."""


class LrSlide:
    """Level 0 of a stored LR pyramidal TIFF. ``read_region`` is blocking (run it in a thread)."""

    def __init__(self, tiff: TiledTiff) -> None:
        self._tiff = tiff
        # Handles are shared by queued requests; the file/connection goes when the last user does.
        self._finalizer = weakref.finalize(self, tiff.close)
        level0 = tiff.levels[0]
        self.geometry = SlideGeometry(level0.width, level0.height)
        self.mpp = tiff.mpp
        self.magnification = tiff.magnification

    def read_region(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._tiff.read_region(0, x, y, width, height)

    @property
    def level_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of each stored pyramid level, level 0 first (the viewer cuts
        zoomed-out tiles from the nearest level instead of level 0)."""
        return [(level.width, level.height) for level in self._tiff.levels]

    def read_level_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._tiff.read_region(level, x, y, width, height)

    def close(self) -> None:
        self._finalizer()


class SlideRepository(Protocol):
    async def open(self, exam_id: str, slide_number: int) -> LrSlide:
        """The LR slide, or UnknownSlide."""
        ...

    def forget(self, exam_id: str, slide_number: int) -> None:
        """Drop a cached handle (after a failed read)."""
        ...


class _LruSlides:
    """Shared LRU of open slides; subclasses say how to open one."""

    def __init__(self, capacity: int = 16) -> None:
        self._open: OrderedDict[tuple[str, int], LrSlide] = OrderedDict()
        self._opening: dict[tuple[str, int], asyncio.Future[LrSlide]] = {}
        self._capacity = capacity
        self._lock = asyncio.Lock()

    async def open(self, exam_id: str, slide_number: int) -> LrSlide:
        key = (exam_id, slide_number)
        async with self._lock:
            slide = self._open.get(key)
            if slide is not None:
                self._open.move_to_end(key)
                return slide
            opening = self._opening.get(key)
            if opening is None:  # one opening per slide: the first screen's tiles all wait for it
                opening = asyncio.ensure_future(self._open_uncached(exam_id, slide_number))
                self._opening[key] = opening
        try:
            slide = await asyncio.shield(opening)
        finally:
            async with self._lock:
                if self._opening.get(key) is opening and opening.done():
                    del self._opening[key]
        async with self._lock:
            self._open[key] = slide
            while len(self._open) > self._capacity:
                self._open.popitem(last=False)  # closed when no queued request uses it any more
        return slide

    def forget(self, exam_id: str, slide_number: int) -> None:
        self._open.pop((exam_id, slide_number), None)

    async def _open_uncached(self, exam_id: str, slide_number: int) -> LrSlide:
        raise NotImplementedError


class DirectorySlides(_LruSlides):
    """LR TIFFs as files under ``root`` at their ``schemas.layout.lr_key``."""

    def __init__(self, root: str | Path, capacity: int = 16) -> None:
        super().__init__(capacity)
        self.root = Path(root)

    def path(self, exam_id: str, slide_number: int) -> Path:
        return self.root / lr_key(exam_id, slide_number)

    async def _open_uncached(self, exam_id: str, slide_number: int) -> LrSlide:
        path = self.path(exam_id, slide_number)
        if not path.is_file():
            raise UnknownSlide(f"no LR image stored for slide {slide_number} of exam {exam_id}")
        return LrSlide(await asyncio.to_thread(TiledTiff, path))


class CatalogSlides(_LruSlides):
    """The catalog's LR image record says which tier object holds the slide."""

    def __init__(self, catalog: Catalog, store: ObjectStore, capacity: int = 16) -> None:
        super().__init__(capacity)
        self._catalog = catalog
        self._store = store

    async def _open_uncached(self, exam_id: str, slide_number: int) -> LrSlide:
        from minio.error import S3Error

        from storage.errors import is_missing

        image = await self._catalog.get_image(exam_id, slide_number, ImageState.LR)
        if image is None:
            raise UnknownSlide(f"no LR image of slide {slide_number} of exam {exam_id} in the catalog")

        def _open() -> LrSlide:
            return LrSlide(TiledTiff(self._store.range_reader(image.object, size=image.size_bytes)))

        try:
            return await asyncio.to_thread(_open)
        except S3Error as exc:
            if is_missing(exc):
                raise UnknownSlide(f"LR image of slide {slide_number} of exam {exam_id} is missing "
                                   f"from the {image.tier.value} tier") from exc
            raise
