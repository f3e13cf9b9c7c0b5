"""The HR tile cache as the compute service sees it: exists / put / get by tile key.

``S3TileCache`` is the hr-cache tier of ``storage.objects.ObjectStore`` (any S3 store; the
blocking client runs in threads). ``DirectoryTileCache`` keeps the same keys on a local
disk for a single-node setup, the unit tests and the bench.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from minio import Minio
from minio.error import S3Error

from schemas.common import ObjectRef, StorageTier
from storage.errors import is_missing

if TYPE_CHECKING:
    from storage.objects import ObjectStore

class TileCache(Protocol):
    """Where HR tiles live (the hr-cache tier), addressed by ``schemas.layout`` keys."""

    def ref(self, key: str) -> ObjectRef: ...

    async def exists(self, key: str) -> bool: ...

    async def put(self, key: str, data: bytes, content_type: str,
                  metadata: Mapping[str, str] | None = None) -> None: ...

    async def get(self, key: str) -> bytes | None: ...


class S3TileCache:
    def __init__(self, client: Minio, bucket: str) -> None:
        self.client, self.bucket = client, bucket

    @classmethod
    def from_store(cls, store: ObjectStore) -> S3TileCache:
        bucket = store.bucket(StorageTier.TEMPORARY)
        return cls(store.client(bucket), bucket)

    def ref(self, key: str) -> ObjectRef:
        return ObjectRef(bucket=self.bucket, key=key)

    def exists_sync(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if is_missing(exc):
                return False
            raise
        return True

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.exists_sync, key)

    def put_sync(self, key: str, data: bytes, content_type: str, metadata: Mapping[str, str] | None = None) -> None:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                               metadata=dict(metadata) if metadata else None)

    async def put(self, key: str, data: bytes, content_type: str,
                  metadata: Mapping[str, str] | None = None) -> None:
        """``metadata``: the object's user metadata (``x-amz-meta-<name>``), written with it."""
        await asyncio.to_thread(self.put_sync, key, data, content_type, metadata)

    def get_sync(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if is_missing(exc):
                return None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self.get_sync, key)


class DirectoryTileCache:
    """HR tiles as files under ``root`` (same keys as the bucket)."""

    def __init__(self, root: str | Path, bucket: str = "slidestream-hr-cache") -> None:
        self.root = Path(root)
        self.bucket = bucket

    def ref(self, key: str) -> ObjectRef:
        return ObjectRef(bucket=self.bucket, key=key)

    def _path(self, key: str) -> Path:
        ref = self.ref(key)  # validates the key: no absolute paths, no '..'
        return self.root / ref.key

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def put(self, key: str, data: bytes, content_type: str,
                  metadata: Mapping[str, str] | None = None) -> None:
        # No user metadata on plain files: readers of a directory cache use the map fragments.
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a tile.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None
