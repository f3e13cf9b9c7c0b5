"""``slide_io.remote.RangeReader`` over S3 ranged GETs: a viewer or tile server reads one
tile of a stored pyramidal TIFF without downloading the slide.

The protocol is synchronous (tifffile parses from a file-like object in a worker thread);
``minio``'s client is thread-safe, so one reader may serve several threads.
"""

from __future__ import annotations

from minio import Minio

from schemas.common import ObjectRef


class S3RangeReader:
    def __init__(self, client: Minio, ref: ObjectRef, *, size: int | None = None) -> None:
        self._client = client
        self._ref = ref
        # Objects are immutable once written (tier moves copy, never rewrite), so the size
        # read once stays valid for the reader's lifetime.
        self._size = size if size is not None else int(client.stat_object(ref.bucket, ref.key).size or 0)

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return self._ref.key

    @property
    def ref(self) -> ObjectRef:
        return self._ref

    def read_range(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset`` (fewer only at the end of the object)."""
        if offset < 0 or length < 0:
            raise ValueError(f"negative range {offset}+{length}")
        length = min(length, self._size - offset)
        if length <= 0:
            return b""  # S3 answers 416 for a range past the end; the protocol wants b""
        response = self._client.get_object(self._ref.bucket, self._ref.key, offset=offset, length=length)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()
