"""Object storage over the plain S3 API (the ``minio`` client library, used as a generic S3
client: nothing here needs MinIO, so Ceph RGW, SeaweedFS, Garage or AWS S3 work too).

Each tier (recent, mid, long, hr-cache, mirror, ingest) has its own bucket and may have its
own endpoint and credentials (``settings.storage.tiers()``), so a hospital can put each tier
on its own media or cluster. An ``ObjectRef`` names bucket and key; the bucket determines
the endpoint, so two tiers may share a bucket only on the same endpoint.

The minio client is blocking; every call runs in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import urllib3
from minio import Minio
from minio.commonconfig import ComposeSource, CopySource
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from core.settings import StorageSettings, TierEndpoint
from schemas.common import ObjectRef, StorageTier
from storage.errors import MISSING_CODES

if TYPE_CHECKING:
    from storage.range_reader import S3RangeReader

CHUNK = 1 << 20
SINGLE_COPY_LIMIT = 5 * (1 << 30)  # S3 CopyObject limit; larger objects use multipart copy
SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256 next to each object we write
USER_METADATA = "x-amz-meta-"  # response header prefix of an object's user metadata


class StorageError(RuntimeError):
    """An object store call failed in a way the S3 client does not describe itself."""


@dataclass(frozen=True)
class Location:
    """One S3 endpoint with one set of credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    secure: bool


@dataclass(frozen=True)
class ObjectInfo:
    ref: ObjectRef
    size: int
    etag: str | None
    sha256: str | None  # from our metadata, when we wrote the object


@dataclass(frozen=True)
class StoredObject:
    ref: ObjectRef
    sha256: str
    size: int


def _tier_name(tier: StorageTier | str) -> str:
    return tier.settings_name if isinstance(tier, StorageTier) else tier


class ObjectStore:
    def __init__(self, storage: StorageSettings, *, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 120.0, max_pool: int = 16) -> None:
        self.settings = storage
        self._tiers: dict[str, TierEndpoint] = storage.tiers()
        self._timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
        self._max_pool = max_pool
        self._clients: dict[Location, Minio] = {}
        self._bucket_location: dict[str, Location] = {}
        for name, tier in self._tiers.items():
            location = self._location(tier)
            known = self._bucket_location.setdefault(tier.bucket, location)
            if known != location:
                raise ValueError(f"bucket {tier.bucket} of tier {name} is configured on two endpoints; "
                                 "give each tier on another endpoint its own bucket name")
        self.default_location = self._location(TierEndpoint(bucket="default"))

    # --- configuration -----------------------------------------------------------------

    def _location(self, tier: TierEndpoint) -> Location:
        access, secret = self.settings.credentials(tier)
        return Location(
            endpoint=tier.endpoint or self.settings.endpoint,
            access_key=access,
            secret_key=secret.get_secret_value(),
            secure=tier.secure if tier.endpoint else self.settings.secure,
        )

    def _client_for(self, location: Location) -> Minio:
        client = self._clients.get(location)
        if client is None:
            # Connection errors are retried by our own backoff (core.retry), not by urllib3
            # for minutes; 5xx answers get urllib3's short retry like minio's default client.
            http = urllib3.PoolManager(
                timeout=self._timeout, maxsize=self._max_pool,
                retries=urllib3.Retry(total=2, connect=0, backoff_factor=0.2,
                                      status_forcelist=[500, 502, 503, 504]))
            client = Minio(location.endpoint, access_key=location.access_key, secret_key=location.secret_key,
                           secure=location.secure, region=self.settings.region, http_client=http)
            self._clients[location] = client
        return client

    def client(self, bucket: str) -> Minio:
        """The client of the endpoint holding ``bucket`` (the default endpoint if no tier uses it)."""
        return self._client_for(self._bucket_location.get(bucket, self.default_location))

    def bucket(self, tier: StorageTier | str) -> str:
        return self._tiers[_tier_name(tier)].bucket

    def ref(self, tier: StorageTier | str, key: str) -> ObjectRef:
        return ObjectRef(bucket=self.bucket(tier), key=key)

    def same_location(self, a: ObjectRef, b: ObjectRef) -> bool:
        """True when ``a`` and ``b`` are the same stored object (tiers sharing a bucket)."""
        return a == b

    # --- reading -----------------------------------------------------------------------

    def _stat(self, ref: ObjectRef) -> ObjectInfo | None:
        try:
            stat = self.client(ref.bucket).stat_object(ref.bucket, ref.key)
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                return None
            raise
        metadata = {str(k).lower(): v for k, v in (stat.metadata or {}).items()}
        sha = metadata.get(f"x-amz-meta-{SHA256_METADATA}")
        return ObjectInfo(ref=ref, size=int(stat.size or 0), etag=stat.etag, sha256=sha)

    async def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        """Size and recorded checksum of ``ref``; None if there is no such object."""
        return await asyncio.to_thread(self._stat, ref)

    async def exists(self, ref: ObjectRef) -> bool:
        return await self.stat(ref) is not None

    def _read(self, ref: ObjectRef, offset: int = 0, length: int = 0) -> bytes:
        response = self.client(ref.bucket).get_object(ref.bucket, ref.key, offset=offset, length=length)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def get_bytes(self, ref: ObjectRef, *, max_bytes: int = 256 << 20) -> bytes:
        info = await self.stat(ref)
        if info is None:
            raise FileNotFoundError(f"{ref} does not exist")
        if info.size > max_bytes:
            raise ValueError(f"{ref} has {info.size} bytes, more than the {max_bytes} allowed in memory")
        return await asyncio.to_thread(self._read, ref)

    async def get_object(self, ref: ObjectRef, *, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``offset .. offset+length`` of ``ref`` with one ranged GET (all of it if
        ``length`` is None); fewer bytes only at the end of the object."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"negative range {offset}+{length}")
        if length == 0:
            return b""
        return await asyncio.to_thread(self._read, ref, offset, length or 0)

    def _read_with_metadata(self, ref: ObjectRef) -> tuple[bytes, dict[str, str]]:
        response = self.client(ref.bucket).get_object(ref.bucket, ref.key)
        try:
            body = response.read()
            headers = {str(k).lower(): str(v) for k, v in response.headers.items()}
        finally:
            response.close()
            response.release_conn()
        return body, {k[len(USER_METADATA):]: v for k, v in headers.items() if k.startswith(USER_METADATA)}

    async def get_with_metadata(self, ref: ObjectRef) -> tuple[bytes, dict[str, str]]:
        """All of ``ref`` and its user metadata (names without ``x-amz-meta-``, lower case),
        with one GET."""
        return await asyncio.to_thread(self._read_with_metadata, ref)

    def _hash(self, ref: ObjectRef) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        response = self.client(ref.bucket).get_object(ref.bucket, ref.key)
        try:
            for chunk in response.stream(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        finally:
            response.close()
            response.release_conn()
        return digest.hexdigest(), size

    async def checksum(self, ref: ObjectRef) -> tuple[str, int] | None:
        """SHA-256 and size of the stored bytes (read back in full); None if missing."""
        try:
            return await asyncio.to_thread(self._hash, ref)
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                return None
            raise

    def range_reader(self, ref: ObjectRef, size: int | None = None) -> S3RangeReader:
        from storage.range_reader import S3RangeReader

        return S3RangeReader(self.client(ref.bucket), ref, size=size)

    def _download(self, ref: ObjectRef, fd: int) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        try:
            response = self.client(ref.bucket).get_object(ref.bucket, ref.key)
        except BaseException:
            os.close(fd)  # the caller handed the descriptor over: close it on every path
            raise
        try:
            with os.fdopen(fd, "wb", closefd=True) as out:
                for chunk in response.stream(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        finally:
            response.close()
            response.release_conn()
        return digest.hexdigest(), size

    async def download_to_fd(self, ref: ObjectRef, fd: int) -> tuple[str, int]:
        """Write ``ref`` into an open file descriptor (closed afterwards); SHA-256 and size."""
        return await asyncio.to_thread(self._download, ref, fd)

    # --- writing -----------------------------------------------------------------------

    def _put(self, ref: ObjectRef, data: bytes, content_type: str) -> StoredObject:
        sha = hashlib.sha256(data).hexdigest()
        self.client(ref.bucket).put_object(ref.bucket, ref.key, io.BytesIO(data), len(data),
                                           content_type=content_type, metadata={SHA256_METADATA: sha})
        return StoredObject(ref, sha, len(data))

    async def put_bytes(self, ref: ObjectRef, data: bytes, *,
                        content_type: str = "application/octet-stream") -> StoredObject:
        return await asyncio.to_thread(self._put, ref, data, content_type)

    def _put_file(self, ref: ObjectRef, path: Path, content_type: str) -> StoredObject:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
            size = handle.tell()
            handle.seek(0)
            sha = digest.hexdigest()
            self.client(ref.bucket).put_object(ref.bucket, ref.key, handle, size, content_type=content_type,
                                               metadata={SHA256_METADATA: sha})
        return StoredObject(ref, sha, size)

    async def put_file(self, ref: ObjectRef, path: Path, *,
                       content_type: str = "application/octet-stream") -> StoredObject:
        return await asyncio.to_thread(self._put_file, ref, Path(path), content_type)

    def _copy(self, source: ObjectRef, target: ObjectRef, sha256: str | None) -> None:
        src_client, dst_client = self.client(source.bucket), self.client(target.bucket)
        metadata = {SHA256_METADATA: sha256} if sha256 else None
        if src_client is dst_client:
            size = self._stat(source)
            if size is None:
                raise FileNotFoundError(f"{source} does not exist")
            if size.size <= SINGLE_COPY_LIMIT:
                dst_client.copy_object(target.bucket, target.key, CopySource(source.bucket, source.key),
                                       metadata=metadata, metadata_directive="REPLACE" if metadata else None)
            else:
                dst_client.compose_object(target.bucket, target.key, [ComposeSource(source.bucket, source.key)],
                                          metadata=metadata)
            return
        # Different endpoints: stream through this process.
        info = self._stat(source)
        if info is None:
            raise FileNotFoundError(f"{source} does not exist")
        response = src_client.get_object(source.bucket, source.key)
        try:
            dst_client.put_object(target.bucket, target.key, response, info.size, metadata=metadata,
                                  part_size=64 << 20)
        finally:
            response.close()
            response.release_conn()

    async def copy(self, source: ObjectRef, target: ObjectRef, *, sha256: str | None = None) -> None:
        """Copy ``source`` to ``target`` (server-side when both are on one endpoint), recording
        ``sha256`` as the target's checksum metadata. FileNotFoundError if the source is missing."""
        if source == target:
            raise ValueError(f"copy of {source} onto itself")
        try:
            await asyncio.to_thread(self._copy, source, target, sha256)
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                raise FileNotFoundError(f"{source} does not exist") from None
            raise

    async def delete(self, ref: ObjectRef) -> None:
        """Delete ``ref``; deleting a missing object is not an error (idempotent)."""
        try:
            await asyncio.to_thread(self.client(ref.bucket).remove_object, ref.bucket, ref.key)
        except S3Error as exc:
            if exc.code not in MISSING_CODES:
                raise

    def _list(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        objects = self.client(bucket).list_objects(bucket, prefix=prefix, recursive=True)
        return [(obj.object_name, int(obj.size or 0)) for obj in objects if not obj.is_dir]

    async def list_prefix(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under ``prefix``, in key order."""
        return await asyncio.to_thread(self._list, bucket, prefix)

    def _delete_prefix(self, bucket: str, prefix: str) -> int:
        client = self.client(bucket)
        keys = [key for key, _ in self._list(bucket, prefix)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1000 keys
            batch = [DeleteObject(key) for key in keys[start:start + 1000]]
            errors = list(client.remove_objects(bucket, batch))  # lazy: must be consumed
            failed = [e for e in errors if e.code not in MISSING_CODES]
            if failed:
                raise StorageError(f"could not delete {len(failed)} object(s) under {bucket}/{prefix}: "
                                   f"{failed[0].code}")
        return len(keys)

    async def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many there were."""
        if not prefix or not prefix.endswith("/"):
            raise ValueError("delete_prefix needs a non-empty prefix ending in '/'")
        return await asyncio.to_thread(self._delete_prefix, bucket, prefix)

    async def usage(self, bucket: str, prefix: str = "") -> tuple[int, int]:
        """(objects, bytes) stored under ``prefix`` of ``bucket``."""
        listing = await self.list_prefix(bucket, prefix)
        return len(listing), sum(size for _, size in listing)

    def close(self) -> None:
        for client in self._clients.values():
            http = getattr(client, "_http", None)
            if http is not None:
                http.clear()
        self._clients.clear()
