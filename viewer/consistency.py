"""A slide's consistency map (``compute.consistency_map``) read from the hr-cache: the map's
fragments are listed and merged. A fragment never changes once written, so each is read
once and kept (bounded); a later call reads only the fragments added since."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from minio.error import S3Error

from compute.consistency_map import decode_fragment, merge
from schemas.common import StorageTier
from schemas.layout import hr_consistency_prefix, hr_provenance_key
from storage.errors import is_missing
from storage.objects import ObjectStore

READS_AT_ONCE = 16


class ConsistencyMaps:
    def __init__(self, store: ObjectStore, max_fragments: int = 50_000) -> None:
        self.store = store
        self.max_fragments = max_fragments
        self._fragments: OrderedDict[str, dict[str, float]] = OrderedDict()

    async def read(self, exam_id: str, slide_number: int, scale: int) -> dict[str, float] | None:
        """Tile name (``<level>/<col>_<row>``) -> dB of the slide's computed x``scale`` tiles;
        None when its tiles were scanned (measured, so there is nothing to compare)."""
        bucket = self.store.bucket(StorageTier.TEMPORARY)
        if await self.store.exists(self.store.ref(StorageTier.TEMPORARY,
                                                  hr_provenance_key(exam_id, slide_number, scale))):
            return None
        keys = [key for key, _ in await self.store.list_prefix(bucket, hr_consistency_prefix(exam_id, slide_number,
                                                                                               scale))]
        gate = asyncio.Semaphore(READS_AT_ONCE)

        async def fragment(key: str) -> dict[str, float]:
            known = self._fragments.get(key)
            if known is not None:
                self._fragments.move_to_end(key)
                return known
            async with gate:
                try:
                    data = await self.store.get_object(self.store.ref(StorageTier.TEMPORARY, key))
                except S3Error as exc:
                    if is_missing(exc):  # evicted since the listing
                        return {}
                    raise
            values = decode_fragment(data)
            self._fragments[key] = values
            while len(self._fragments) > self.max_fragments:
                self._fragments.popitem(last=False)
            return values

        return merge(await asyncio.gather(*(fragment(key) for key in keys)))
