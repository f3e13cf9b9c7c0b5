"""The terminal agent's background loop: heartbeats, assignments, and downloading each
assigned exam's HR tiles from the server's hr-cache into the local cache.

One ``poll`` is one step (assignments -> delete what left -> manifests -> missing tiles);
``run`` repeats it every ``poll_s`` and ``run_until_complete`` stops once every assigned
exam is complete locally (``slidestream terminal run --once``). Errors are recorded in the
status and logged once per episode, not on every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from terminal.cache import CacheFull, ChecksumMismatch, ExamState, LocalCache, SlidePlan, TileKey
from terminal.client import (
    Assignment,
    ExamManifest,
    NotAssigned,
    ServerUnavailable,
    TerminalApiError,
    TerminalClient,
    Unauthorized,
)
from terminal.progress import ProgressDisplay

log = structlog.get_logger(__name__)

MAX_OUTAGE_DELAY_S = 60.0
MAX_CHECKSUM_MISMATCHES = 20  # per --once run


class SyncError(Exception):
    """``--once`` could not finish: the message says why."""


@dataclass
class PollResult:
    complete: bool  # every assigned exam is complete locally
    downloaded: int = 0
    error: str | None = None


@dataclass
class SyncStatus:
    online: bool = False
    last_contact: str | None = None  # ISO time of the last answer from the server
    assigned: list[str] | None = None  # None until the first assignment list arrived
    last_error: str | None = None
    error_kind: str | None = None  # "unreachable", "cache_full", "unauthorized", "api"
    downloaded: int = 0
    checksum_mismatches: int = 0
    missing_on_server: int = 0  # listed in a manifest, 404 when fetched (evicted meanwhile)
    slides_pending: dict[str, int] = field(default_factory=dict)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _plans(manifest: ExamManifest) -> list[SlidePlan]:
    return [SlidePlan(slide_number=s.slide_number, scale=s.scale, scanned=s.scanned, expected=s.expected,
                      levels=frozenset(level.level for level in s.levels), server_complete=s.complete)
            for s in manifest.slides]


class Syncer:
    def __init__(self, client: TerminalClient, cache: LocalCache, *, heartbeat_s: float, poll_s: float,
                 concurrency: int, progress: ProgressDisplay | None = None) -> None:
        self.client = client
        self.cache = cache
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.concurrency = concurrency
        self.progress = progress
        self.status = SyncStatus()
        self._outages = 0  # consecutive polls without the server, for the backoff

    # ---- one step ------------------------------------------------------------------------------

    async def poll(self) -> PollResult:
        try:
            result = await self._poll()
        except ServerUnavailable as exc:
            self._outages += 1
            self.status.online = False
            self._error("unreachable", f"server unreachable: {exc}; local copies are still served, retrying")
            return PollResult(complete=False, error=str(exc))
        except CacheFull as exc:
            self._error("cache_full", str(exc))
            return PollResult(complete=False, error=str(exc))
        except Unauthorized as exc:
            self._error("unauthorized", str(exc))
            return PollResult(complete=False, error=str(exc))
        except TerminalApiError as exc:
            self._error("api", str(exc))
            return PollResult(complete=False, error=str(exc))
        self._recovered()
        return result

    async def _poll(self) -> PollResult:
        assignments = await self.client.assignments()
        self._contact()
        ids = [a.exam_id for a in assignments]
        for exam_id in self.cache.prune(set(ids)):
            if self.progress:
                self.progress.remove(exam_id)
        self.status.assigned = ids
        downloaded = 0
        for assignment in sorted(assignments, key=lambda a: (a.assigned_at or "", a.exam_id)):
            downloaded += await self._sync_exam(assignment)
        states = [self.cache.exam(exam_id) for exam_id in ids]
        return PollResult(complete=all(s is not None and s.complete for s in states), downloaded=downloaded)

    async def _sync_exam(self, assignment: Assignment) -> int:
        state = self.cache.exam(assignment.exam_id)
        if state is not None and state.expired:
            return 0  # past retention: not downloaded again while it stays assigned
        if state is not None and state.complete and state.revision == assignment.revision:
            return 0  # nothing changed on the server's side since it completed
        try:
            manifest = await self.client.manifest(assignment.exam_id)
        except NotAssigned:
            return 0  # reassigned between the two calls: gone from the next assignment list
        self.cache.record_exam(assignment.exam_id, assigned_at=assignment.assigned_at, revision=assignment.revision,
                               slides=_plans(manifest))
        have = self.cache.indexed(assignment.exam_id)
        missing = [TileKey(assignment.exam_id, s.slide_number, level, col, row)
                   for s in manifest.slides for level, col, row in s.present]
        missing = [key for key in missing if key not in have]
        self.status.slides_pending[assignment.exam_id] = sum(s.expected for s in manifest.slides) - len(have)
        self._show(assignment.exam_id)
        return await self._download(assignment.exam_id, missing)

    async def _download(self, exam_id: str, keys: list[TileKey]) -> int:
        """Fetch ``keys`` with ``concurrency`` workers; the first CacheFull, outage or refusal
        stops them all (each worker finishes the tile in hand) and is raised."""
        todo: Iterator[TileKey] = iter(keys)
        halt: list[Exception] = []
        done = 0

        async def worker() -> None:
            nonlocal done
            for key in todo:  # shared: each key is taken by one worker
                if halt:
                    return
                try:
                    remote = await self.client.tile(key)
                    if remote is None:
                        self.status.missing_on_server += 1
                        continue
                    self.cache.put(key, remote.data, remote.sha256, remote.source)
                except ChecksumMismatch as exc:
                    self.status.checksum_mismatches += 1
                    log.warning("terminal.sync.checksum_mismatch", tile=str(key), detail=str(exc))
                    continue
                except (CacheFull, TerminalApiError) as exc:
                    halt.append(exc)
                    return
                done += 1
                self.status.downloaded += 1
                self._show(exam_id)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, max(1, len(keys))))))
        if halt:
            raise halt[0]
        return done

    def _show(self, exam_id: str) -> None:
        state = self.cache.exam(exam_id)
        if self.progress and state is not None:
            self.progress.update(exam_id, state.done, state.expected, state.complete)

    # ---- errors: logged once per episode -------------------------------------------------------

    def _contact(self) -> None:
        if self.status.error_kind == "unreachable":
            log.info("terminal.server.reachable", after_failed_polls=self._outages)
            self.status.error_kind = self.status.last_error = None
        self._outages = 0
        self.status.online = True
        self.status.last_contact = _now_iso()

    def _error(self, kind: str, message: str) -> None:
        if self.status.error_kind != kind:  # the same trouble again (numbers may differ): already logged
            event = "terminal.server.unreachable" if kind == "unreachable" else f"terminal.sync.{kind}"
            log.error(event, error=message)
        self.status.error_kind = kind
        self.status.last_error = message

    def _recovered(self) -> None:
        if self.status.error_kind is not None:
            log.info("terminal.sync.resumed", after=self.status.error_kind)
        self.status.error_kind = self.status.last_error = None

    # ---- loops ---------------------------------------------------------------------------------

    def next_delay(self) -> float:
        """poll_s; while the server is unreachable, doubling up to a minute."""
        if self._outages:
            return float(min(MAX_OUTAGE_DELAY_S, self.poll_s * 2 ** (self._outages - 1)))
        return self.poll_s

    async def heartbeat(self) -> None:
        try:
            await self.client.heartbeat()
        except ServerUnavailable:
            self.status.online = False  # the poll logs the outage
        except TerminalApiError as exc:
            self._error("unauthorized" if isinstance(exc, Unauthorized) else "api", str(exc))
        else:
            self._contact()

    async def run(self, stop: asyncio.Event) -> None:
        beats = asyncio.create_task(self._heartbeats(stop))
        try:
            while not stop.is_set():
                await self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.next_delay())
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.heartbeat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.heartbeat_s)

    async def run_until_complete(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, *,
                                 timeout_s: float | None = None,
                                 clock: Callable[[], float] = time.monotonic) -> PollResult:
        """Poll until every assigned exam is complete locally; SyncError on the first error, or
        when ``timeout_s`` passes first (tiles the server has not computed: still queued, or
        their super-resolution failed; the message names the exams and what is missing)."""
        deadline = None if timeout_s is None else clock() + timeout_s
        await self.heartbeat()
        if self.status.error_kind:
            raise SyncError(self.status.last_error or "heartbeat refused")
        while True:
            result = await self.poll()
            if result.error:
                raise SyncError(result.error)
            if result.complete:
                return result
            # The loop retries a corrupt download on the next poll; one that keeps arriving
            # corrupt is a fault to report, not to retry forever.
            if self.status.checksum_mismatches > MAX_CHECKSUM_MISMATCHES:
                raise SyncError(f"{self.status.checksum_mismatches} tile downloads did not match the server's "
                                "SHA-256; nothing corrupt was kept; check the network path to the server")
            if deadline is not None and clock() >= deadline:
                pending = {exam: n for exam, n in self.status.slides_pending.items() if n > 0}
                listed = ", ".join(f"{exam} ({n} tiles)" for exam, n in sorted(pending.items())) or "none listed"
                raise SyncError(f"not complete after {timeout_s:.0f} s; missing on the server: {listed}. They are "
                                "still being computed, or their super-resolution failed (see `slidestream slide "
                                "EXAM SLIDE` on the server); what is complete is kept and served")
            await sleep(self.poll_s)  # the server is still computing some tiles

    # ---- what the local server shows -----------------------------------------------------------

    def exam_view(self, exam_id: str) -> dict[str, object]:
        """{local, complete, fraction, reason, source}: why this exam is (not) read from here."""
        state = self.cache.exam(exam_id)
        assigned = self.status.assigned
        local = state is not None and state.done > 0
        fraction = state.fraction if state else 0.0
        complete = state is not None and state.complete
        if complete and state is not None:
            reason = "40x tiles from this workstation's local copy"
        elif state is not None and state.expired:
            reason = f"the local copy was deleted after the retention period ({self.cache.retention_s / 86400:g} days)"
        elif assigned is None and state is None:
            reason = "this workstation has not reached the server yet"
        elif assigned is not None and exam_id not in assigned:
            reason = "not assigned to this workstation"
        elif self.status.error_kind == "cache_full":
            reason = f"this workstation's tile cache is full; download paused ({fraction:.0%})"
        elif self.status.error_kind == "unreachable":
            reason = f"the server cannot be reached; this exam is still downloading to this workstation ({fraction:.0%})"
        else:
            reason = f"this exam is still downloading to this workstation ({fraction:.0%})"
        return {"local": local, "complete": complete, "fraction": round(fraction, 4), "reason": reason,
                "source": _source(state), "slides": _slides(state)}

    def snapshot(self, terminal_id: str) -> dict[str, object]:
        cache = self.cache
        exams = [{"exam_id": s.exam_id, "done": s.done, "expected": s.expected, "complete": s.complete,
                  "expired": s.expired, "assigned_at": s.assigned_at} for s in cache.exams()]
        return {
            "terminal_id": terminal_id, "online": self.status.online, "last_contact": self.status.last_contact,
            "assigned": self.status.assigned, "exams": exams,
            "cache": {"dir": str(cache.root), "used_bytes": cache.used_bytes, "max_bytes": cache.max_bytes,
                      "free_bytes": cache.free_bytes(), "min_free_bytes": cache.min_free_bytes,
                      "retention_days": cache.retention_s / 86400},
            "downloaded": self.status.downloaded, "checksum_mismatches": self.status.checksum_mismatches,
            "corrupt_reads": cache.corrupt_reads, "last_error": self.status.last_error,
            "error_kind": self.status.error_kind,
        }


def _source(state: ExamState | None) -> str | None:
    if state is None or not state.slides:
        return None
    kinds = {"scanned" if s.scanned else "computed" for s in state.slides}
    return kinds.pop() if len(kinds) == 1 else "computed and scanned"


def _slides(state: ExamState | None) -> dict[str, dict[str, object]]:
    if state is None:
        return {}
    return {str(s.slide_number): {"complete": s.complete, "done": s.done, "expected": s.expected,
                                  "source": "scanned" if s.scanned else "computed"} for s in state.slides}
