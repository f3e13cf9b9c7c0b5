"""Object storage as the compute service sees it: ranged reads of LR slides, the HR tile cache.

Plain S3 calls through the ``minio`` client (any S3 store works), run in threads so the
event loop never blocks. ``DirectoryTileCache`` keeps the same keys on a local disk for a
single-node setup, the unit tests and the bench.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Protocol

from minio import Minio
from minio.error import S3Error

from schemas.common import ObjectRef
from slidestream.settings import Settings

_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"}


def tier_client(settings: Settings, tier: str) -> tuple[Minio, str]:
    """S3 client and bucket of a storage tier (``recent``, ``hr_cache``, ... as in settings)."""
    storage = settings.storage
    cfg = storage.tiers()[tier]
    secret = cfg.secret_key or storage.secret_key
    client = Minio(
        cfg.endpoint or storage.endpoint,
        access_key=cfg.access_key or storage.access_key,
        secret_key=secret.get_secret_value(),
        secure=cfg.secure if cfg.endpoint else storage.secure,
        region=storage.region,
    )
    return client, cfg.bucket


def is_missing(exc: S3Error) -> bool:
    return exc.code in _MISSING_CODES


class S3RangeReader:
    """``slide_io.RangeReader`` over one S3 object: each read is one ranged GET."""

    def __init__(self, client: Minio, bucket: str, key: str, size: int | None = None) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._size = size if size is not None else int(client.stat_object(bucket, key).size or 0)

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return self._key

    def read_range(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"negative range {offset}+{length}")
        length = min(length, self._size - offset)
        if length <= 0:
            return b""
        response = self._client.get_object(self._bucket, self._key, offset=offset, length=length)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()


class TileCache(Protocol):
    """Where HR tiles live (the hr-cache tier), addressed by ``schemas.layout`` keys."""

    def ref(self, key: str) -> ObjectRef: ...

    async def exists(self, key: str) -> bool: ...

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes | None: ...


class S3TileCache:
    def __init__(self, client: Minio, bucket: str) -> None:
        self.client, self.bucket = client, bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3TileCache":
        return cls(*tier_client(settings, "hr_cache"))

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

    def put_sync(self, key: str, data: bytes, content_type: str) -> None:
        import io

        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self.put_sync, key, data, content_type)

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

    async def put(self, key: str, data: bytes, content_type: str) -> None:
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
