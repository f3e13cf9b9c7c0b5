"""The reading workstation's local copy of assigned exams' HR tiles.

Files live at ``<root>/<exam>/<slide>/<level>/<col>_<row>.png``; an sqlite index (stdlib)
records every finished tile (sha256, size, source) and each exam's state. A tile is
written to a temp file in its own directory, fsynced, and renamed only once its bytes match
the server's checksum; it enters the index after the rename. So a crash or kill at any
point leaves either an indexed, whole tile or debris that ``open`` removes; a file that
rots on disk later is caught by the hash check on every read and downloaded again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import structlog

from schemas.ids import is_valid_id

log = structlog.get_logger(__name__)

TEMP_SUFFIX = ".part"
INDEX_NAME = "index.sqlite3"
_LAST_USED_EVERY_S = 60.0  # a read refreshes an exam's last use at most this often (one write per minute)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tiles (
    exam_id TEXT NOT NULL, slide_number INTEGER NOT NULL, level INTEGER NOT NULL,
    col INTEGER NOT NULL, row INTEGER NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (exam_id, slide_number, level, col, row));
CREATE TABLE IF NOT EXISTS exams (
    exam_id TEXT PRIMARY KEY, assigned_at TEXT, revision INTEGER NOT NULL DEFAULT 0,
    assigned INTEGER NOT NULL DEFAULT 1, first_seen REAL NOT NULL, last_used REAL NOT NULL,
    expired_at REAL);
CREATE TABLE IF NOT EXISTS slides (
    exam_id TEXT NOT NULL, slide_number INTEGER NOT NULL, scale INTEGER NOT NULL,
    scanned INTEGER NOT NULL, expected INTEGER NOT NULL, levels TEXT NOT NULL,
    server_complete INTEGER NOT NULL,
    PRIMARY KEY (exam_id, slide_number));
"""


class CacheFull(Exception):
    """Writing one more tile would break a disk limit; the message says which and what to do."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit  # "max_cache_bytes" or "min_free_bytes"


class ChecksumMismatch(Exception):
    """The downloaded bytes do not hash to the server's ``X-Content-SHA256``."""


class TileKey(NamedTuple):
    exam_id: str
    slide_number: int
    level: int
    col: int
    row: int

    def __str__(self) -> str:  # exam ID and coordinates only: no patient identity
        return f"{self.exam_id}/{self.slide_number}/{self.level}/{self.col}_{self.row}"


@dataclass(frozen=True)
class LocalTile:
    data: bytes
    source: str  # "computed" or "scanned"


@dataclass(frozen=True)
class SlideState:
    slide_number: int
    scale: int
    scanned: bool
    expected: int
    levels: frozenset[int]
    done: int
    server_complete: bool

    @property
    def complete(self) -> bool:
        """Every HR tile the server will ever have is here (the server says it is done too)."""
        return self.server_complete and self.done >= self.expected


@dataclass(frozen=True)
class ExamState:
    exam_id: str
    assigned_at: str | None
    revision: int
    assigned: bool
    expired: bool
    first_seen: float
    last_used: float
    slides: tuple[SlideState, ...]

    @property
    def done(self) -> int:
        return sum(s.done for s in self.slides)

    @property
    def expected(self) -> int:
        return sum(s.expected for s in self.slides)

    @property
    def complete(self) -> bool:
        return bool(self.slides) and not self.expired and all(s.complete for s in self.slides)

    @property
    def fraction(self) -> float:
        return 1.0 if self.complete else (self.done / self.expected if self.expected else 0.0)


@dataclass(frozen=True)
class SlidePlan:
    """What the server's manifest says about one slide (the cache's view of it)."""

    slide_number: int
    scale: int
    scanned: bool
    expected: int
    levels: frozenset[int]
    server_complete: bool


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _check_id(exam_id: str) -> str:
    # Exam IDs become directory names: refuse anything that could climb out of the cache.
    if not is_valid_id(exam_id):  # starts with a letter or digit: never "." or ".."
        raise ValueError(f"exam ID {exam_id[:40]!r} is not usable as a cache directory name")
    return exam_id


class LocalCache:
    def __init__(self, root: Path, *, max_bytes: int, min_free_bytes: int, retention_days: float,
                 clock: Callable[[], float] = time.time,
                 disk_usage: Callable[[Path], tuple[int, int, int]] | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.retention_s = retention_days * 86400
        self._clock = clock
        # Looked up at call time, so a test's monkeypatch of shutil.disk_usage applies too.
        self._disk_usage = disk_usage or (lambda path: shutil.disk_usage(path))
        self._lock = threading.Lock()  # the index is shared by the sync loop and the local server
        self._db: sqlite3.Connection | None = None
        self._used = 0
        self._touched: dict[str, float] = {}
        self.checksum_mismatches = 0
        self.corrupt_reads = 0

    # ---- opening and recovery ------------------------------------------------------------------

    def open(self) -> LocalCache:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # patient images: this user only
        self._db = sqlite3.connect(self.root / INDEX_NAME, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # tile files are fsynced; the index can be rebuilt by re-downloading
        self._db.executescript(SCHEMA)
        self.recover()
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("LocalCache.open() was not called")
        return self._db

    def recover(self) -> tuple[int, int]:
        """Remove what an interrupted run left: temp files, and index rows whose file is gone.
        Returns (temp files removed, rows dropped)."""
        temps = 0
        for path in self.root.rglob(f"*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            temps += 1
        with self._lock:
            rows = self.db.execute("SELECT exam_id, slide_number, level, col, row FROM tiles").fetchall()
            missing = [r for r in rows if not self.path(TileKey(*r)).is_file()]
            self.db.executemany("DELETE FROM tiles WHERE exam_id=? AND slide_number=? AND level=? AND col=? AND row=?",
                                missing)
            self._used = int(self.db.execute("SELECT COALESCE(SUM(size), 0) FROM tiles").fetchone()[0])
        if temps or missing:
            log.info("terminal.cache.recovered", temp_files_removed=temps, index_rows_dropped=len(missing))
        return temps, len(missing)

    # ---- tiles ---------------------------------------------------------------------------------

    def path(self, key: TileKey) -> Path:
        return self.root / _check_id(key.exam_id) / str(key.slide_number) / str(key.level) / f"{key.col}_{key.row}.png"

    def has(self, key: TileKey) -> bool:
        with self._lock:
            return self.db.execute("SELECT 1 FROM tiles WHERE exam_id=? AND slide_number=? AND level=? AND col=? AND row=?",
                                   key).fetchone() is not None

    def indexed(self, exam_id: str) -> set[TileKey]:
        with self._lock:
            rows = self.db.execute("SELECT exam_id, slide_number, level, col, row FROM tiles WHERE exam_id=?",
                                   (exam_id,)).fetchall()
        return {TileKey(*r) for r in rows}

    def put(self, key: TileKey, data: bytes, sha256: str, source: str) -> None:
        """Store one tile atomically. Raises ChecksumMismatch (nothing written) or CacheFull."""
        if hashlib.sha256(data).hexdigest() != sha256.strip().lower():
            self.checksum_mismatches += 1
            raise ChecksumMismatch(f"tile {key}: {len(data)} bytes do not match the server's X-Content-SHA256; "
                                   "discarded, it is downloaded again on the next poll")
        self._make_room(len(data))
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise self._full("min_free_bytes", f"the disk ran out of space writing tile {key}") from exc
            raise
        self._fsync_dir(final.parent)
        with self._lock:
            old = self.db.execute("SELECT size FROM tiles WHERE exam_id=? AND slide_number=? AND level=? AND col=? AND row=?",
                                  key).fetchone()
            self.db.execute("INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (*key, sha256.lower(), len(data), source))
            self._used += len(data) - (old[0] if old else 0)

    def read(self, key: TileKey) -> LocalTile | None:
        """The tile if it is indexed and its bytes still hash right; a corrupt or vanished file is
        dropped from the index (the sync loop downloads it again) and None is returned."""
        with self._lock:
            row = self.db.execute("SELECT sha256, source FROM tiles WHERE exam_id=? AND slide_number=? AND level=? "
                                  "AND col=? AND row=?", key).fetchone()
        if row is None:
            return None
        try:
            data = self.path(key).read_bytes()
        except OSError:
            data = None
        if data is None or hashlib.sha256(data).hexdigest() != row[0]:
            self.corrupt_reads += 1
            log.warning("terminal.cache.corrupt_tile", tile=str(key), action="dropped; downloaded again")
            self._forget(key)
            return None
        self._touch(key.exam_id)
        return LocalTile(data=data, source=row[1])

    def _forget(self, key: TileKey) -> None:
        self.path(key).unlink(missing_ok=True)
        with self._lock:
            row = self.db.execute("SELECT size FROM tiles WHERE exam_id=? AND slide_number=? AND level=? AND col=? AND row=?",
                                  key).fetchone()
            self.db.execute("DELETE FROM tiles WHERE exam_id=? AND slide_number=? AND level=? AND col=? AND row=?", key)
            self._used -= row[0] if row else 0

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        # The rename itself must survive a power cut, not only the file's bytes.
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- disk guard ----------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return self._used

    def free_bytes(self) -> int:
        return int(self._disk_usage(self.root)[2])

    def _make_room(self, size: int) -> None:
        if self._used + size > self.max_bytes:
            self._evict_unassigned(self._used + size - self.max_bytes)
        if self._used + size > self.max_bytes:
            raise self._full("max_cache_bytes",
                             f"{human_bytes(self._used)} used + {human_bytes(size)} would exceed max_cache_bytes "
                             f"{human_bytes(self.max_bytes)} (every exam here is still assigned)")
        free = self.free_bytes()
        if free - size < self.min_free_bytes:
            raise self._full("min_free_bytes",
                             f"the disk has {human_bytes(free)} free; writing {human_bytes(size)} would leave less "
                             f"than min_free_bytes {human_bytes(self.min_free_bytes)}")

    def _full(self, limit: str, what: str) -> CacheFull:
        advice = ("raise SLIDESTREAM_TERMINAL__MAX_CACHE_BYTES or finish reports so exams leave this workstation"
                  if limit == "max_cache_bytes" else
                  f"free disk space on the volume of {self.root} or lower SLIDESTREAM_TERMINAL__MIN_FREE_BYTES")
        return CacheFull(limit, f"local tile cache full: {what}; downloads paused, complete exams are still "
                                f"served; {advice} (retried every poll)")

    def _evict_unassigned(self, needed: int) -> None:
        """Delete exams no longer assigned, least recently used first, until ``needed`` bytes are freed."""
        with self._lock:
            victims = [r[0] for r in self.db.execute("SELECT exam_id FROM exams WHERE assigned=0 ORDER BY last_used")]
        freed = 0
        for exam_id in victims:
            if freed >= needed:
                break
            before = self._used
            self.delete_exam(exam_id, reason="evicted for space")
            freed += before - self._used

    # ---- exams ---------------------------------------------------------------------------------

    def record_exam(self, exam_id: str, *, assigned_at: str | None, revision: int, slides: Iterable[SlidePlan]) -> None:
        """Remember an assigned exam and what its manifest expects (kept across restarts)."""
        _check_id(exam_id)
        now = self._clock()
        with self._lock:
            self.db.execute("INSERT INTO exams (exam_id, assigned_at, revision, assigned, first_seen, last_used) "
                            "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT(exam_id) DO UPDATE SET assigned_at=excluded.assigned_at, "
                            "revision=excluded.revision, assigned=1", (exam_id, assigned_at, revision, now, now))
            for s in slides:
                self.db.execute("INSERT OR REPLACE INTO slides VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (exam_id, s.slide_number, s.scale, int(s.scanned), s.expected,
                                 json.dumps(sorted(s.levels)), int(s.server_complete)))

    def exam(self, exam_id: str) -> ExamState | None:
        with self._lock:
            row = self.db.execute("SELECT assigned_at, assigned, expired_at, first_seen, last_used, revision FROM exams "
                                  "WHERE exam_id=?", (exam_id,)).fetchone()
            if row is None:
                return None
            slides = self.db.execute(
                "SELECT s.slide_number, s.scale, s.scanned, s.expected, s.levels, s.server_complete, "
                "(SELECT COUNT(*) FROM tiles t WHERE t.exam_id=s.exam_id AND t.slide_number=s.slide_number) "
                "FROM slides s WHERE s.exam_id=? ORDER BY s.slide_number", (exam_id,)).fetchall()
        return ExamState(
            exam_id=exam_id, assigned_at=row[0], assigned=bool(row[1]), expired=row[2] is not None,
            first_seen=row[3], last_used=row[4], revision=row[5],
            slides=tuple(SlideState(slide_number=s[0], scale=s[1], scanned=bool(s[2]), expected=s[3],
                                    levels=frozenset(json.loads(s[4])), server_complete=bool(s[5]), done=s[6])
                         for s in slides))

    def exams(self) -> list[ExamState]:
        with self._lock:
            ids = [r[0] for r in self.db.execute("SELECT exam_id FROM exams ORDER BY exam_id")]
        return [state for exam_id in ids if (state := self.exam(exam_id)) is not None]

    def slide(self, exam_id: str, slide_number: int) -> SlideState | None:
        state = self.exam(exam_id)
        return next((s for s in state.slides if s.slide_number == slide_number), None) if state else None

    def _touch(self, exam_id: str) -> None:
        now = self._clock()
        if now - self._touched.get(exam_id, float("-inf")) < _LAST_USED_EVERY_S:
            return
        self._touched[exam_id] = now
        with self._lock:
            self.db.execute("UPDATE exams SET last_used=? WHERE exam_id=?", (now, exam_id))

    def delete_exam(self, exam_id: str, *, reason: str, keep_record: bool = False) -> None:
        """Delete an exam's files and index rows. ``keep_record``: keep its exam row (marked
        expired) so that a still-assigned exam past retention is not downloaded again."""
        shutil.rmtree(self.root / _check_id(exam_id), ignore_errors=True)
        with self._lock:
            size = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM tiles WHERE exam_id=?", (exam_id,)).fetchone()[0]
            self.db.execute("DELETE FROM tiles WHERE exam_id=?", (exam_id,))
            self.db.execute("DELETE FROM slides WHERE exam_id=?", (exam_id,))
            if keep_record:
                self.db.execute("UPDATE exams SET expired_at=? WHERE exam_id=?", (self._clock(), exam_id))
            else:
                self.db.execute("DELETE FROM exams WHERE exam_id=?", (exam_id,))
            self._used -= int(size)
        self._touched.pop(exam_id, None)
        log.info("terminal.cache.exam_deleted", exam_id=exam_id, reason=reason, freed=human_bytes(size))

    def prune(self, assigned: set[str]) -> list[str]:
        """Delete exams no longer assigned, and those held longer than the retention period
        (the bound on patient images at rest, also while the server cannot be asked). Returns
        the exam IDs deleted."""
        deleted = []
        now = self._clock()
        with self._lock:  # marked first: an interrupted deletion is finished by eviction later
            self.db.execute(f"UPDATE exams SET assigned=0 WHERE exam_id NOT IN ({','.join('?' * len(assigned))})",
                            sorted(assigned))
        for state in self.exams():
            if state.exam_id not in assigned:
                self.delete_exam(state.exam_id, reason="no longer assigned to this terminal")
                deleted.append(state.exam_id)
            elif not state.expired and now - state.first_seen > self.retention_s:
                self.delete_exam(state.exam_id, reason=f"held longer than retention_days ({self.retention_s / 86400:g})",
                                 keep_record=True)
                deleted.append(state.exam_id)
        return deleted
