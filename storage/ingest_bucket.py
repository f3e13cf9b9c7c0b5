"""The ingest bucket as the scanner side and the QC service need it, over the shared
``storage.objects.ObjectStore``: upload a file, download an object into a file, and tell a
missing object (a QC verdict) from an outage (retried, see ``core.retry``).
"""

from __future__ import annotations

import os
from pathlib import Path

from minio.error import S3Error

from core.retry import with_retries
from core.settings import StorageSettings
from schemas.common import ObjectRef
from storage.errors import MissingObject, is_missing
from storage.objects import ObjectStore, StoredObject


def _open_for_write(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


class IngestBucket:
    """Reads and writes objects of the ingest tier (``settings.storage.ingest``).

    ``attempts`` bounds the retries of transient failures (None: retry until it works, which
    is what an agent wants: an outage delays work, it never turns into a verdict).
    """

    def __init__(self, storage: StorageSettings, *, store: ObjectStore | None = None,
                 attempts: int | None = 5) -> None:
        self.store = store or ObjectStore(storage)
        self.bucket = self.store.bucket("ingest")
        self._attempts = attempts

    def ref(self, key: str) -> ObjectRef:
        return ObjectRef(bucket=self.bucket, key=key)

    async def upload_file(self, key: str, path: Path) -> StoredObject:
        """Upload ``path``; the stored object's ref, SHA-256 and size (of the bytes sent)."""
        ref = self.ref(key)
        return await with_retries(lambda: self.store.put_file(ref, path), what="ingest upload",
                                  attempts=self._attempts)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> ObjectRef:
        ref = self.ref(key)
        await with_retries(lambda: self.store.put_bytes(ref, data, content_type=content_type),
                           what="ingest write", attempts=self._attempts)
        return ref

    async def download(self, ref: ObjectRef, destination: Path) -> tuple[str, int]:
        """Write ``ref`` to ``destination``; its SHA-256 and size. ``MissingObject`` if absent."""
        if ref.bucket != self.bucket:
            # Events name the bucket; the agent only ever reads the configured ingest bucket.
            raise MissingObject(ref, "scan (not in the ingest bucket)")
        try:
            # Each attempt starts the file afresh; the shared store streams and hashes it.
            return await with_retries(lambda: self.store.download_to_fd(ref, _open_for_write(destination)),
                                      what="ingest download", attempts=self._attempts)
        except S3Error as exc:
            if is_missing(exc):
                raise MissingObject(ref, "scan") from None
            raise

    async def exists(self, ref: ObjectRef) -> bool:
        return ref.bucket == self.bucket and await self.store.exists(ref)

    async def delete(self, ref: ObjectRef) -> None:
        await self.store.delete(ref)

    def close(self) -> None:
        self.store.close()
