"""Byte-range access to a stored file, so one tile can be read without fetching the slide.

``RangeReader`` is what the storage layer implements over S3/MinIO ranged GETs
(``get_object(bucket, key, offset=, length=)`` plus ``stat_object`` for the size);
``FileRangeReader`` is the local-file version. ``RangeReaderIO`` adapts a reader to the
seekable binary stream that tifffile parses headers from, fetching whole blocks and caching
them so that walking the IFD chain costs a handful of requests, not one per tag.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class RangeReader(Protocol):
    """Random access to the bytes of one immutable object."""

    @property
    def size(self) -> int:
        """Total length in bytes."""
        ...

    @property
    def name(self) -> str:
        """Display name (base name or object key) used in error messages."""
        ...

    def read_range(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset`` (fewer only at end of object)."""
        ...


class FileRangeReader:
    """A local file behind the ``RangeReader`` protocol (positional reads, thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._fd = os.open(self._path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return self._path.name

    def read_range(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"negative range {offset}+{length}")
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileRangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RangeReaderIO(io.RawIOBase):
    """Read-only seekable stream over a ``RangeReader``, with an LRU cache of fixed blocks."""

    def __init__(self, reader: RangeReader, *, block_size: int = 64 * 1024, max_blocks: int = 64) -> None:
        super().__init__()
        self._reader = reader
        self._size = reader.size
        self._block_size = block_size
        self._max_blocks = max_blocks
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self.name = reader.name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        pos = base + offset
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io.RawIOBase types the buffer wider
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self._size - self._pos))
        done = 0
        while done < want:
            index, start = divmod(self._pos + done, self._block_size)
            block = self._block(index)
            chunk = block[start : start + want - done]
            if not chunk:
                break
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
        self._pos += done
        return done

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            block = self._reader.read_range(index * self._block_size, self._block_size)
            self._blocks[index] = block
            if len(self._blocks) > self._max_blocks:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(index)
        return block
