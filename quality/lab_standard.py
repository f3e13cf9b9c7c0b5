"""The lab's own colour standard: the shipped (or configured) standard, learning from every
slide the lab accepts, persisted in one JSON file that every QC worker on the host shares.

- ``LabStandard.current()`` is what slides are judged against: the file as the last worker
  wrote it, re-read only when it changed (one ``stat`` per slide), the seed standard while the
  lab has no file yet.
- ``LabStandard.learn_from(report)`` folds a slide that passed into the file
  (``standard.updated``: bounded memory, so the standard follows slow drift but no run of
  slides can drag it far). Only a clean pass teaches it (``learnable_descriptor``).

Deleting the file resets the lab to the seed; ``learn=False`` freezes it (judging still uses it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from quality.report import QcReport
from quality.standard import SHIPPED, ColourStandard, load_standard, updated

log = logging.getLogger(__name__)

MEMORY = 1000  # slides; see ``standard.updated``
Signature = tuple[int, int, int]  # (inode, mtime ns, size): a rename gives a new inode, so no write goes unseen


class LabStandardError(RuntimeError):
    """The lab standard file exists but is not a usable colour standard."""


def read_standard(path: Path) -> tuple[Signature, ColourStandard]:
    """The standard in ``path`` and the signature of the very file read (fstat of the open file,
    so a concurrent replace cannot pair one version's signature with another's content).
    FileNotFoundError passes through; anything else unusable is a ``LabStandardError`` naming
    the file."""
    with open(path, "rb") as handle:
        signature = _signature_of(os.fstat(handle.fileno()))
        raw = handle.read()
    try:
        standard = ColourStandard.from_dict(json.loads(raw.decode("utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON and Unicode errors are ValueErrors
        raise LabStandardError(f"the lab colour standard {path} is damaged ({type(exc).__name__}: {exc}); "
                               "repair it, or delete it to start again from the seed standard") from exc
    numbers = np.concatenate([standard.mean, standard.covariance.ravel(), [standard.count, standard.scale]])
    if not np.isfinite(numbers).all() or standard.count < 1 or standard.scale <= 0:
        raise LabStandardError(f"the lab colour standard {path} holds non-finite or impossible values; "
                               "repair it, or delete it to start again from the seed standard")
    return signature, standard


def learnable_descriptor(report: QcReport) -> np.ndarray | None:
    """The colour descriptor of a slide the standard may learn from, else None.

    Only a clean pass teaches: the whole verdict passed (a slide refused for blur may be
    mis-stained too), the slide was recognised as H&E (an "unknown" stain is judged as H&E to be
    safe, but is no evidence of what H&E looks like here), and its colour passed *as scanned* -
    a cast that normalisation removed lets the slide through but must not teach the standard
    the cast (its score stays the uncorrected one, above the threshold)."""
    if not report.passed or report.stain != "he":
        return None
    colour = next((c for c in report.checks if c.name == "colour_cast"), None)
    if (colour is None or not colour.judged or not colour.passed or colour.score > colour.threshold
            or colour.details.get("corrected")):
        return None
    descriptor = report.colour_descriptor
    if descriptor is None or not np.isfinite(descriptor).all():
        return None
    return descriptor


@dataclass(frozen=True)
class _Loaded:
    signature: Signature | None  # None: there was no lab file
    standard: ColourStandard


class LabStandard:
    """One lab standard file; one instance per process (it caches what it last read)."""

    def __init__(self, path: Path, seed: Path = SHIPPED, *, learn: bool = True, memory: int = MEMORY) -> None:
        self.path = Path(path)
        self.seed_path = Path(seed)
        self.learn = learn
        self.memory = memory
        # The lock lives beside the data file, not on it: the data file is replaced by rename,
        # so a lock on it would be held on an inode that is no longer the file, and a second
        # writer opening the new one would not wait.
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._mutex = threading.Lock()  # the QC service judges in worker threads
        self._loaded: _Loaded | None = None

    def seed(self) -> ColourStandard:
        # The seed is a read-only file (shipped or configured), so load_standard's cache is right for it.
        return load_standard(self.seed_path)

    def initial(self) -> ColourStandard:
        """What the lab file starts as: the seed, named so that reports say which was used."""
        seed = self.seed()
        return replace(seed, name=f"lab (from {seed.name})")

    def current(self) -> ColourStandard:
        """The standard to judge with. A damaged file does not stop QC: slides are judged against
        the seed, the error is logged (once per damaged version), and the file is left as it is
        for repair - learning stays off until it is repaired or deleted (``fold_in`` refuses).
        Why not fail: every slide would then be refused as unprocessable, which says nothing
        true about the slides; the seed is the calibrated standard of a fresh install."""
        signature = _stat(self.path)
        with self._mutex:
            if self._loaded is not None and self._loaded.signature == signature:
                return self._loaded.standard
            try:
                signature, standard = read_standard(self.path)
            except FileNotFoundError:
                signature, standard = None, self.initial()
            except (LabStandardError, OSError) as exc:
                log.error("%s; judging against the seed standard %s meanwhile, and not learning", exc, self.seed_path)
                standard = self.seed()
            self._loaded = _Loaded(signature, standard)
            return standard

    def learn_from(self, report: QcReport) -> ColourStandard | None:
        """Fold the slide of ``report`` in if it may teach the standard (``learnable_descriptor``)
        and learning is on; the new standard, or None when nothing changed."""
        if not self.learn:
            return None
        descriptor = learnable_descriptor(report)
        return None if descriptor is None else self.fold_in(descriptor)

    def fold_in(self, descriptor: np.ndarray) -> ColourStandard:
        """Read-modify-write of the lab file under an exclusive lock, so workers on this host take
        turns and none overwrites another's slide; the new version replaces the old by rename,
        so readers (who take no lock) see the old or the new file, never a torn one. A damaged
        file raises ``LabStandardError`` and is left untouched."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.lock_path):
            try:
                _, base = read_standard(self.path)
            except FileNotFoundError:
                base = self.initial()
            standard = updated(base, descriptor, self.memory)
            signature = _write_atomically(self.path, standard)
        with self._mutex:
            self._loaded = _Loaded(signature, standard)
        return standard


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # flock: released by the kernel when the holder dies, so a crashed worker never wedges the others.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_atomically(path: Path, standard: ColourStandard) -> Signature:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(standard.to_dict(), indent=1, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())  # the content is on disk before the name points at it
            os.fchmod(handle.fileno(), 0o644)  # colour statistics, no patient data: operators may read it
            signature = _signature_of(os.fstat(handle.fileno()))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)  # the rename survives a power cut
    return signature


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stat(path: Path) -> Signature | None:
    try:
        return _signature_of(os.stat(path))
    except FileNotFoundError:
        return None


def _signature_of(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_mtime_ns, st.st_size)
