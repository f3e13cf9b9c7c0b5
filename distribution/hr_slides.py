"""A slide's super-resolution levels and what of them the hr-cache holds, as pre-computation
and the terminal API see them (geometry from ``schemas.layout``, the one definition)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from catalog.repository import Catalog
from schemas.common import ImageState, StorageTier
from schemas.layout import hr_prefix, hr_provenance_key, hr_scale_for, hr_tile_key, sr_levels, tile_grid
from storage.objects import ObjectStore

TileKey = tuple[int, int, int]  # (level, col, row)
TileSource = Literal["computed", "scanned"]
_TILE_NAME = re.compile(r"^(\d{1,3})/(\d{1,7})_(\d{1,7})\.png$")
CACHE_S = 10.0  # a slide's geometry never changes; its scan marker may appear (hr_scan) meanwhile


@dataclass(frozen=True)
class SrLevel:
    level: int
    cols: int
    rows: int


@dataclass(frozen=True)
class SlideLevels:
    exam_id: str
    slide_number: int
    scale: int
    scanned: bool  # HR tiles cut from a real 40x scan: nothing to compute
    levels: tuple[SrLevel, ...]

    @property
    def expected(self) -> int:
        return sum(lv.cols * lv.rows for lv in self.levels)

    def tiles(self) -> Iterator[TileKey]:
        """Every SR tile, level by level, row by row (neighbours stay together in chunks)."""
        for lv in self.levels:
            for row in range(lv.rows):
                for col in range(lv.cols):
                    yield lv.level, col, row

    def contains(self, tile: TileKey) -> bool:
        level, col, row = tile
        return any(lv.level == level and col < lv.cols and row < lv.rows for lv in self.levels)


class HrSlides:
    def __init__(self, catalog: Catalog, store: ObjectStore, target_magnification: float) -> None:
        self.catalog = catalog
        self.store = store
        self.target_magnification = target_magnification
        self._cache: dict[tuple[str, int], tuple[float, SlideLevels]] = {}

    async def levels(self, exam_id: str, slide_number: int) -> SlideLevels | None:
        """The slide's SR levels, or None when it has no stored LR image with a known size."""
        key = (exam_id, slide_number)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        image = await self.catalog.get_image(exam_id, slide_number, ImageState.LR)
        if image is None or image.width is None or image.height is None:
            return None
        scale = hr_scale_for(image.magnification, self.target_magnification)
        width, height = image.width * scale, image.height * scale
        levels = tuple(SrLevel(level, *tile_grid(width, height, level)) for level in sr_levels(image.width,
                                                                                               image.height, scale))
        marker = self.store.ref(StorageTier.TEMPORARY, hr_provenance_key(exam_id, slide_number, scale))
        found = SlideLevels(exam_id, slide_number, scale, await self.store.exists(marker), levels)
        if len(self._cache) > 10_000:  # bounded
            self._cache.clear()
        self._cache[key] = (time.monotonic() + CACHE_S, found)
        return found

    async def present(self, slide: SlideLevels) -> set[TileKey]:
        """The slide's SR tiles in the hr-cache: one listing of its prefix; only
        ``<level>/<col>_<row>.png`` keys inside the pyramid count."""
        prefix = hr_prefix(slide.exam_id, slide.slide_number, slide.scale)
        found: set[TileKey] = set()
        for key, _ in await self.store.list_prefix(self.store.bucket(StorageTier.TEMPORARY), prefix):
            match = _TILE_NAME.match(key[len(prefix):])
            if match is not None:
                tile = (int(match[1]), int(match[2]), int(match[3]))
                if slide.contains(tile):
                    found.add(tile)
        return found

    async def tile(self, slide: SlideLevels, level: int, col: int, row: int) -> tuple[bytes, TileSource] | None:
        """An SR tile's PNG bytes from the hr-cache, or None when it is not there."""
        if not slide.contains((level, col, row)):
            return None
        ref = self.store.ref(StorageTier.TEMPORARY,
                             hr_tile_key(slide.exam_id, slide.slide_number, slide.scale, level, col, row))
        try:
            body = await self.store.get_bytes(ref, max_bytes=16 << 20)
        except FileNotFoundError:
            return None
        return body, "scanned" if slide.scanned else "computed"
