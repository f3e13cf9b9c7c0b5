"""The ingest bucket as the scanner side and the QC agent need it: upload a file, download an
object into a file, tell a missing object from other failures.

A deliberately small surface over the plain S3 API (the ``minio`` client, blocking, so every
call runs in a worker thread). It is the seam to the shared ``storage`` package: only this
module talks to S3 for the scanner side.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from minio import Minio
from minio.error import S3Error

from schemas.common import ObjectRef
from slidestream.settings import StorageSettings, TierEndpoint

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchBucket", "NoSuchVersion"})
CHUNK = 1 << 20


class MissingObject(FileNotFoundError):
    """The object (or its bucket) does not exist."""


def _client(storage: StorageSettings, tier: TierEndpoint) -> Minio:
    secret = tier.secret_key or storage.secret_key
    return Minio(
        tier.endpoint or storage.endpoint,
        access_key=tier.access_key or storage.access_key,
        secret_key=secret.get_secret_value(),
        secure=tier.secure if tier.endpoint else storage.secure,
        region=storage.region,
    )


class IngestBucket:
    """Reads and writes objects of the ingest tier (``settings.storage.ingest``)."""

    def __init__(self, storage: StorageSettings) -> None:
        self.bucket = storage.ingest.bucket
        self._client = _client(storage, storage.ingest)

    def ref(self, key: str) -> ObjectRef:
        return ObjectRef(bucket=self.bucket, key=key)

    def _check_bucket(self, ref: ObjectRef) -> None:
        if ref.bucket != self.bucket:
            # Events name the bucket; we only ever read and write the configured ingest one.
            raise MissingObject(f"{ref.bucket} is not the ingest bucket ({self.bucket})")

    async def upload_file(self, key: str, path: Path, *, sha256: str | None = None,
                          content_type: str = "application/octet-stream") -> ObjectRef:
        ref = self.ref(key)
        metadata = {"sha256": sha256} if sha256 else None
        await asyncio.to_thread(self._client.fput_object, ref.bucket, ref.key, str(path),
                                content_type=content_type, metadata=metadata)
        return ref

    def _download(self, ref: ObjectRef, destination: Path) -> tuple[str, int]:
        try:
            response = self._client.get_object(ref.bucket, ref.key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise MissingObject(f"{ref} does not exist ({exc.code})") from None
            raise
        digest, size = hashlib.sha256(), 0
        try:
            with destination.open("wb") as out:
                for chunk in response.stream(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        finally:
            response.close()
            response.release_conn()
        return digest.hexdigest(), size

    async def download(self, ref: ObjectRef, destination: Path) -> tuple[str, int]:
        """Write ``ref`` to ``destination``; its SHA-256 and size. ``MissingObject`` if absent."""
        self._check_bucket(ref)
        return await asyncio.to_thread(self._download, ref, destination)

    def _exists(self, ref: ObjectRef) -> bool:
        try:
            self._client.stat_object(ref.bucket, ref.key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return False
            raise
        return True

    async def exists(self, ref: ObjectRef) -> bool:
        return ref.bucket == self.bucket and await asyncio.to_thread(self._exists, ref)

    async def delete(self, ref: ObjectRef) -> None:
        self._check_bucket(ref)
        await asyncio.to_thread(self._client.remove_object, ref.bucket, ref.key)
