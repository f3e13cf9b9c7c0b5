"""Watch-folder adapter for scanners that can only write files into a directory.

Layout of the watched directory ``DIR``::

    DIR/scan.svs            a scan, with its identifiers given by EITHER
    DIR/scan.svs.json       a sidecar JSON object (preferred), OR
    DIR/P123+E456+3.svs     the file name <patient_id>+<exam_id>+<slide_number>[.ext...]
    DIR/done/               ingested scans (and sidecars) are moved here
    DIR/rejected/           refused scans, each with <name>.reason.txt saying why

Sidecar keys: ``patient_id``, ``exam_id``, ``slide_number`` (required), ``scanner_id``,
``body_part``, ``magnification``, ``mpp`` (optional); any other key is refused, so a typo
cannot silently drop a field. ``+`` never occurs in an ID, so the name convention is
unambiguous. When both are present, the sidecar wins.

A scan is taken only once it is *stable*: size and modification time unchanged across polls
for ``settle_s`` seconds (scanners write large files slowly). Hidden files and names ending
in ``.part``, ``.tmp``, ``.partial``, ``.crdownload`` or ``~`` are in-progress writes and
ignored; every ``*.json`` is a sidecar, never a scan. A stable scan with neither a sidecar
nor a conventional name waits ``sidecar_wait_s`` for its sidecar, then is rejected.

Once only: an ingested scan leaves ``DIR`` (moved to ``done/``). If the upload or the
broker fails, the scan stays where it is and is retried on a later poll - nothing is
rejected for an outage. A crash between publishing and the move re-ingests the scan on
restart (at-least-once; the same object key is rewritten and QC runs again).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog

from scanner.ids import InvalidIds, SlideIds, validate_ids
from scanner.ingest import IngestError

log = structlog.get_logger(__name__)

DONE_DIR = "done"
REJECTED_DIR = "rejected"
SIDECAR_SUFFIX = ".json"
REASON_SUFFIX = ".reason.txt"
MAX_SIDECAR_BYTES = 64 * 1024
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", "~")
SIDECAR_KEYS = frozenset({"patient_id", "exam_id", "slide_number", "scanner_id", "body_part",
                          "magnification", "mpp"})
NAME_CONVENTION = re.compile(r"^(?P<patient>[^+]+)\+(?P<exam>[^+]+)\+(?P<slide>[0-9]+)(?:\..*)?$")


class Rejected(ValueError):
    """The scan cannot be ingested as it is; the message is written to its reason file, next to
    the scan. ``loggable`` is what logs and the console get instead when the message repeats
    something of the operator's input (a sidecar's key, a file name: either may be a patient's
    name or ID)."""

    def __init__(self, message: str, *, loggable: str | None = None) -> None:
        super().__init__(message)
        self.loggable = loggable if loggable is not None else message


@dataclass(frozen=True)
class ScanRequest:
    """What the watch folder hands to ingest for one scan."""

    path: Path
    ids: SlideIds
    magnification: float | None = None
    mpp: float | None = None


IngestFn = Callable[[ScanRequest], Awaitable[object]]


@dataclass(frozen=True)
class Outcome:
    name: str  # file name in the watch folder (may contain a patient ID: do not log it)
    status: Literal["ingested", "rejected", "retry"]
    reason: str = ""
    ids: SlideIds | None = None

    def describe(self) -> str:
        """One line without patient identifiers, for consoles and logs."""
        what = f"exam {self.ids.exam_id} slide {self.ids.slide_number}" if self.ids else "a scan"
        return f"{self.status}: {what}" + (f" ({self.reason})" if self.reason else "")


# --- identifiers of a scan -------------------------------------------------------------------


def sidecar_path(scan: Path) -> Path:
    return scan.with_name(scan.name + SIDECAR_SUFFIX)


def _positive_number(document: dict, key: str) -> float | None:
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise Rejected(f"sidecar: {key} must be a positive number")
    return float(value)


def request_from_sidecar(scan: Path, sidecar: Path, *, scanner_id: str | None = None,
                         magnification: float | None = None) -> ScanRequest:
    """Identifiers from ``sidecar``; ``scanner_id`` / ``magnification`` are the defaults of
    this watch folder for keys the sidecar leaves out."""
    if sidecar.stat().st_size > MAX_SIDECAR_BYTES:
        raise Rejected(f"sidecar: larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        document = json.loads(sidecar.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(f"sidecar: not a UTF-8 JSON document ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise Rejected("sidecar: expected a JSON object")
    unknown = sorted(set(document) - SIDECAR_KEYS)
    if unknown:
        allowed = f"allowed: {', '.join(sorted(SIDECAR_KEYS))}"
        raise Rejected(f"sidecar: unknown key(s) {', '.join(k[:40] for k in unknown[:5])}; {allowed}",
                       loggable=f"sidecar: {len(unknown)} unknown key(s); {allowed}")
    try:
        ids = validate_ids(document.get("patient_id"), document.get("exam_id"), document.get("slide_number"),
                           scanner_id=document.get("scanner_id", scanner_id), body_part=document.get("body_part"))
    except InvalidIds as exc:
        raise Rejected(f"sidecar: {exc}") from None
    return ScanRequest(scan, ids, _positive_number(document, "magnification") or magnification,
                       _positive_number(document, "mpp"))


def request_from_name(scan: Path, *, scanner_id: str | None = None,
                      magnification: float | None = None) -> ScanRequest | None:
    """Identifiers from a ``<patient>+<exam>+<slide>.ext`` name; None if it has another form."""
    match = NAME_CONVENTION.match(scan.name)
    if match is None:
        return None
    try:
        ids = validate_ids(match["patient"], match["exam"], match["slide"], scanner_id=scanner_id)
    except InvalidIds as exc:
        raise Rejected(f"file name <patient_id>+<exam_id>+<slide_number>: {exc}") from None
    return ScanRequest(scan, ids, magnification, None)


# --- file stability ----------------------------------------------------------------------------


@dataclass
class _Seen:
    signature: tuple[int, int]  # size, mtime_ns
    since: float  # clock time the signature was first seen


@dataclass
class StabilityTracker:
    """Says when a file has stopped changing: same size and mtime for ``settle_s`` seconds."""

    settle_s: float
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def observe(self, path: Path) -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._seen.pop(path.name, None)
            return False
        signature, now = (stat.st_size, stat.st_mtime_ns), self.clock()
        seen = self._seen.get(path.name)
        if seen is None or seen.signature != signature:
            self._seen[path.name] = _Seen(signature, now)
            return False
        return now - seen.since >= self.settle_s

    def stable_since(self, path: Path) -> float | None:
        seen = self._seen.get(path.name)
        return seen.since if seen else None

    def forget(self, path: Path) -> None:
        self._seen.pop(path.name, None)

    def keep_only(self, names: set[str]) -> None:
        for name in list(self._seen):
            if name not in names:
                del self._seen[name]


# --- the folder ----------------------------------------------------------------------------------


def is_candidate(path: Path) -> bool:
    """A regular file that could be a scan (not hidden, not in progress, not a sidecar)."""
    name = path.name
    if name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES) or name.endswith(SIDECAR_SUFFIX):
        return False
    return path.is_file()


def unique_destination(directory: Path, name: str) -> Path:
    """``directory/name``, or ``name`` with ``.1``, ``.2``... before its suffix if taken."""
    target = directory / name
    stem, suffix = Path(name).stem, Path(name).suffix
    counter = 1
    while target.exists() or target.with_name(target.name + REASON_SUFFIX).exists():
        target = directory / f"{stem}.{counter}{suffix}"
        counter += 1
    return target


class WatchFolder:
    """Polls ``root`` and ingests each stable scan once (see the module doc for the layout)."""

    def __init__(self, root: Path, ingest: IngestFn, *, settle_s: float = 2.0, sidecar_wait_s: float = 30.0,
                 scanner_id: str | None = None, magnification: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self.done = self.root / DONE_DIR
        self.rejected = self.root / REJECTED_DIR
        self._ingest = ingest
        self._tracker = StabilityTracker(settle_s, clock)
        self._clock = clock
        self._sidecar_wait_s = sidecar_wait_s
        self._scanner_id = scanner_id
        self._magnification = magnification
        if not self.root.is_dir():
            raise NotADirectoryError(f"watch folder {self.root} does not exist")
        self.done.mkdir(exist_ok=True)
        self.rejected.mkdir(exist_ok=True)

    async def poll(self) -> list[Outcome]:
        """One pass over the folder; the outcome of every scan acted on (ingested, rejected,
        or left for retry after an outage)."""
        candidates = sorted(p for p in self.root.iterdir() if is_candidate(p))
        self._tracker.keep_only({p.name for p in candidates} | {sidecar_path(p).name for p in candidates})
        outcomes = []
        for scan in candidates:
            outcome = await self._consider(scan)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def run(self, *, interval_s: float = 1.0, stop: asyncio.Event | None = None,
                  on_outcome: Callable[[Outcome], None] | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            for outcome in await self.poll():
                if on_outcome:
                    on_outcome(outcome)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass

    async def _consider(self, scan: Path) -> Outcome | None:
        sidecar = sidecar_path(scan)
        has_sidecar = sidecar.exists()
        # Observe both on every poll so that they settle together.
        scan_stable = self._tracker.observe(scan)
        sidecar_stable = self._tracker.observe(sidecar) if has_sidecar else True
        if not (scan_stable and sidecar_stable):
            return None
        try:
            if has_sidecar:
                request = request_from_sidecar(scan, sidecar, scanner_id=self._scanner_id,
                                               magnification=self._magnification)
            else:
                request = request_from_name(scan, scanner_id=self._scanner_id, magnification=self._magnification)
                if request is None:
                    since = self._tracker.stable_since(scan) or self._clock()
                    if self._clock() - since < self._sidecar_wait_s:
                        return None  # its sidecar may still come
                    convention = "the name does not follow <patient_id>+<exam_id>+<slide_number>.<ext>"
                    raise Rejected(f"no sidecar {sidecar.name} and {convention}",
                                   loggable=f"no sidecar (<scan>{SIDECAR_SUFFIX}) and {convention}")
        except Rejected as exc:
            return self._reject(scan, str(exc), exc.loggable)
        try:
            await self._ingest(request)
        except IngestError as exc:
            return self._reject(scan, str(exc))
        except Exception as exc:  # noqa: BLE001 - outage: keep the file, try again next poll
            # The type only: messages of I/O errors carry paths, and names may identify patients.
            log.warning("watch.ingest_retry", error=type(exc).__name__)
            return Outcome(scan.name, "retry", type(exc).__name__, request.ids)
        self._move(scan, self.done)
        return Outcome(scan.name, "ingested", "", request.ids)

    def _move(self, scan: Path, directory: Path) -> Path:
        target = unique_destination(directory, scan.name)
        sidecar = sidecar_path(scan)
        scan.rename(target)
        if sidecar.exists():
            sidecar.rename(sidecar_path(target))
        self._tracker.forget(scan)
        self._tracker.forget(sidecar)
        return target

    def _reject(self, scan: Path, reason: str, loggable: str | None = None) -> Outcome:
        target = self._move(scan, self.rejected)
        target.with_name(target.name + REASON_SUFFIX).write_text(reason + "\n", encoding="utf-8")
        # Logs and the console get reasons naming fields, never their values, keys or the file
        # name (any may identify the patient); the reason file beside the scan has the details.
        loggable = reason if loggable is None else loggable
        log.warning("watch.rejected", reason=loggable)
        return Outcome(scan.name, "rejected", loggable)
