"""The terminal's local tile cache: atomic writes, recovery after a crash, verification on
read, the disk guard, retention and deletion of exams no longer assigned."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from terminal.cache import TEMP_SUFFIX, CacheFull, ChecksumMismatch, LocalCache, SlidePlan, TileKey

GiB = 1 << 30
PLENTY = (100 * GiB, 0, 100 * GiB)  # shutil.disk_usage: total, used, free


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(root: Path, *, max_bytes: int = 1 << 20, min_free: int = 0, retention_days: float = 14.0,
         free: int = 100 * GiB, clock: Clock | None = None) -> LocalCache:
    return LocalCache(root, max_bytes=max_bytes, min_free_bytes=min_free, retention_days=retention_days,
                      clock=clock or Clock(), disk_usage=lambda _: (100 * GiB, 0, free)).open()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(cache: LocalCache, exam_id: str, expected: int = 2, *, complete: bool = True) -> None:
    cache.record_exam(exam_id, assigned_at=None, revision=1, slides=[
        SlidePlan(slide_number=1, scale=8, scanned=False, expected=expected, levels=frozenset({12}), server_complete=complete)])


KEY = TileKey("E1", 1, 12, 0, 0)
DATA = b"\x89PNG tile bytes"


def test_put_then_read_round_trip_and_file_layout(tmp_path: Path) -> None:
    cache = make(tmp_path)
    record(cache, "E1")
    cache.put(KEY, DATA, sha(DATA), "computed")
    assert (tmp_path / "E1" / "1" / "12" / "0_0.png").read_bytes() == DATA
    tile = cache.read(KEY)
    assert tile is not None and tile.data == DATA and tile.source == "computed"
    assert cache.used_bytes == len(DATA)
    assert not list(tmp_path.rglob(f"*{TEMP_SUFFIX}"))


def test_checksum_mismatch_is_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    cache = make(tmp_path)
    with pytest.raises(ChecksumMismatch, match="X-Content-SHA256"):
        cache.put(KEY, DATA, sha(b"other"), "computed")
    assert cache.checksum_mismatches == 1
    assert not cache.has(KEY)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("index.sqlite3")]


def test_restart_removes_temp_files_and_index_rows_without_a_file(tmp_path: Path) -> None:
    cache = make(tmp_path)
    record(cache, "E1")
    other = TileKey("E1", 1, 12, 1, 0)
    cache.put(KEY, DATA, sha(DATA), "computed")
    cache.put(other, DATA + b"2", sha(DATA + b"2"), "computed")
    cache.close()
    # A kill mid-download leaves a temp file; a lost file leaves an index row pointing nowhere.
    leftover = tmp_path / "E1" / "1" / "12" / f".1_1.png.abcd1234{TEMP_SUFFIX}"
    leftover.write_bytes(b"half a til")
    cache.path(other).unlink()

    reopened = make(tmp_path)
    assert not leftover.exists()
    assert reopened.has(KEY) and not reopened.has(other)
    assert reopened.used_bytes == len(DATA)
    assert reopened.read(other) is None


def test_corrupt_file_is_never_served_and_is_dropped_for_download(tmp_path: Path) -> None:
    cache = make(tmp_path)
    record(cache, "E1")
    cache.put(KEY, DATA, sha(DATA), "computed")
    cache.path(KEY).write_bytes(b"rotten bytes")
    assert cache.read(KEY) is None
    assert not cache.has(KEY) and not cache.path(KEY).exists()
    assert cache.corrupt_reads == 1 and cache.used_bytes == 0
    state = cache.exam("E1")
    assert state is not None and state.done == 0  # so the sync loop downloads it again


def test_max_cache_bytes_evicts_unassigned_exams_first_then_refuses(tmp_path: Path) -> None:
    cache = make(tmp_path, max_bytes=1 << 20)
    big = b"x" * 400_000
    record(cache, "OLD")
    cache.put(TileKey("OLD", 1, 12, 0, 0), big, sha(big), "computed")
    record(cache, "E1")
    cache.put(TileKey("E1", 1, 12, 0, 0), big, sha(big), "computed")
    with cache._lock:  # OLD left the assignment list, its deletion did not happen yet (interrupted prune)
        cache.db.execute("UPDATE exams SET assigned=0 WHERE exam_id='OLD'")
    cache.put(TileKey("E1", 1, 12, 1, 0), big, sha(big), "computed")
    assert cache.exam("OLD") is None and not (tmp_path / "OLD").exists()

    with pytest.raises(CacheFull) as caught:
        cache.put(TileKey("E1", 1, 12, 1, 1), big, sha(big), "computed")
    assert caught.value.limit == "max_cache_bytes"
    message = str(caught.value)
    assert "781.2 KiB used" in message and "1.0 MiB" in message and "MAX_CACHE_BYTES" in message
    assert not cache.has(TileKey("E1", 1, 12, 1, 1)) and not cache.path(TileKey("E1", 1, 12, 1, 1)).exists()


def test_min_free_bytes_refuses_with_the_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    cache = LocalCache(tmp_path, max_bytes=1 << 30, min_free_bytes=2 * GiB, retention_days=14).open()
    monkeypatch.setattr(shutil, "disk_usage", lambda _: (100 * GiB, 98 * GiB, 2 * GiB + 10))
    record(cache, "E1")
    with pytest.raises(CacheFull) as caught:
        cache.put(KEY, DATA, sha(DATA), "computed")
    assert caught.value.limit == "min_free_bytes"
    assert "2.0 GiB free" in str(caught.value) and "MIN_FREE_BYTES" in str(caught.value)
    assert not cache.path(KEY).exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda _: PLENTY)
    cache.put(KEY, DATA, sha(DATA), "computed")  # space freed: the next try works
    assert cache.has(KEY)


def test_enospc_during_the_write_becomes_cache_full_without_a_partial_file(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cache = make(tmp_path)
    record(cache, "E1")
    real_write = os.write

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data)[:3])  # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(CacheFull, match="ran out of space") as caught:
        cache.put(KEY, DATA, sha(DATA), "computed")
    assert caught.value.limit == "min_free_bytes"
    assert not cache.has(KEY)
    assert [p.name for p in (tmp_path / "E1" / "1" / "12").iterdir()] == []


def test_unassigned_exams_are_deleted_and_retention_expires_assigned_ones(tmp_path: Path) -> None:
    clock = Clock()
    cache = make(tmp_path, retention_days=14, clock=clock)
    for exam_id in ("E1", "E2"):
        record(cache, exam_id)
        cache.put(TileKey(exam_id, 1, 12, 0, 0), DATA, sha(DATA), "computed")
    assert cache.prune({"E1", "E2"}) == []
    assert cache.prune({"E1"}) == ["E2"]
    assert cache.exam("E2") is None and not (tmp_path / "E2").exists()

    clock.now += 15 * 86400
    assert cache.prune({"E1"}) == ["E1"]
    state = cache.exam("E1")
    assert state is not None and state.expired and state.done == 0 and not (tmp_path / "E1").exists()
    assert cache.prune({"E1"}) == []  # stays expired (not downloaded again) while assigned
    assert cache.prune(set()) == ["E1"] and cache.exam("E1") is None
    assert cache.used_bytes == 0


def test_exam_progress_and_completeness(tmp_path: Path) -> None:
    cache = make(tmp_path)
    record(cache, "E1", expected=2, complete=True)
    cache.put(KEY, DATA, sha(DATA), "scanned")
    state = cache.exam("E1")
    assert state is not None and (state.done, state.expected, state.complete, state.fraction) == (1, 2, False, 0.5)
    cache.put(TileKey("E1", 1, 12, 1, 0), DATA, sha(DATA), "scanned")
    state = cache.exam("E1")
    assert state is not None and state.complete


def test_exam_ids_cannot_escape_the_cache_directory(tmp_path: Path) -> None:
    cache = make(tmp_path / "cache")
    with pytest.raises(ValueError, match="not usable"):
        cache.put(TileKey("../evil", 1, 12, 0, 0), DATA, sha(DATA), "computed")
    with pytest.raises(ValueError):
        record(cache, "..")
