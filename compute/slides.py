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
from typing import Any, Protocol

import numpy as np

from compute.plan import SlideGeometry
from schemas.common import ImageState, StorageTier
from schemas.layout import lr_key
from slide_io import RangeReader, TiledTiff
from slidestream.settings import Settings


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
        self._capacity = capacity
        self._lock = asyncio.Lock()

    async def open(self, exam_id: str, slide_number: int) -> LrSlide:
        key = (exam_id, slide_number)
        async with self._lock:
            slide = self._open.get(key)
            if slide is not None:
                self._open.move_to_end(key)
                return slide
        slide = await self._open_uncached(exam_id, slide_number)
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
    """The catalog's ``images`` record (state LR) says which tier and object hold the slide."""

    def __init__(self, settings: Settings, database: Any, capacity: int = 16) -> None:
        super().__init__(capacity)
        self._settings = settings
        self._images = database["images"]  # schemas.catalog.ImageRecord.collection

    async def locate(self, exam_id: str, slide_number: int) -> tuple[StorageTier, str, str]:
        doc = await self._images.find_one(
            {"exam_id": exam_id, "slide_number": slide_number, "state": int(ImageState.LR)},
            projection={"tier": 1, "object": 1},
        )
        if doc is None:
            raise UnknownSlide(f"no LR image of slide {slide_number} of exam {exam_id} in the catalog")
        try:
            tier = StorageTier(doc["tier"])
            bucket, key = str(doc["object"]["bucket"]), str(doc["object"]["key"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UnknownSlide(f"catalog record of slide {slide_number} of exam {exam_id} is incomplete") from exc
        return tier, bucket, key

    async def _open_uncached(self, exam_id: str, slide_number: int) -> LrSlide:
        from minio.error import S3Error

        from compute.objects import S3RangeReader, is_missing, tier_client

        tier, bucket, key = await self.locate(exam_id, slide_number)
        client, _ = tier_client(self._settings, tier.settings_name)

        def _open() -> LrSlide:
            reader: RangeReader = S3RangeReader(client, bucket, key)
            return LrSlide(TiledTiff(reader))

        try:
            return await asyncio.to_thread(_open)
        except S3Error as exc:
            if is_missing(exc):
                raise UnknownSlide(
                    f"LR image of slide {slide_number} of exam {exam_id} is missing from the {tier.value} tier"
                ) from exc
            raise
