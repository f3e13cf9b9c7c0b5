"""Scanner side: upload an original scan to the ingest bucket and publish ``slide.scanned``.

The file is not judged here (QC does that, and a bad file must reach QC so that it gets a
``slide.qc_failed`` with its reason); only the identifiers are checked, because an upload
under a malformed exam ID could not even be given a key.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from core.settings import Settings
from scanner.ids import SlideIds
from schemas.events import SlideScanned
from schemas.layout import ingest_key
from storage.ingest_bucket import IngestBucket

log = structlog.get_logger(__name__)

MAX_FILENAME = 255
MAX_SUFFIX = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class IngestError(ValueError):
    """The file cannot be ingested (missing, empty, not a regular file). Messages never name
    the file: scan names may carry patient identifiers."""


@dataclass(frozen=True)
class ScanFacts:
    """What the scanner side learns from the file before uploading it."""

    size_bytes: int
    magnification: float | None
    mpp: float | None


def key_name(filename: str) -> str:
    """Last segment of the ingest object key: ``scan`` plus the file's (sanitised) extension.

    Not the file name itself: names such as ``<patient>+<exam>+<slide>.svs`` carry patient
    IDs, and object keys end up in logs and events. The key's prefix already says which exam
    and slide it is; the original name is kept in the event (``original_filename``).
    """
    base = Path(filename.replace("\\", "/")).name.lower()
    suffix = os.path.splitext(base)[1]
    if base.endswith((".ome.tif", ".ome.tiff")):
        suffix = ".ome" + suffix
    suffix = _UNSAFE.sub("", suffix)[:MAX_SUFFIX]
    return "scan" + (suffix if len(suffix) > 1 else "")


def original_name(path: Path) -> str:
    """The file's base name as recorded in the event (control characters dropped, capped)."""
    name = "".join(ch for ch in path.name if ch.isprintable())
    return name[:MAX_FILENAME] or "scan"


def _stated_resolution(path: Path) -> tuple[float | None, float | None]:
    """Magnification and mpp stated by the file, when a reader can tell cheaply; never fails
    (a file QC will reject is still ingested, so that its rejection is recorded)."""
    from slide_io import SlideError, open_slide

    try:
        with open_slide(path) as slide:
            return slide.magnification, slide.mpp
    except (SlideError, OSError, ValueError):
        return None, None


def examine(path: Path) -> ScanFacts:
    """Size and stated resolution of a scan file (blocking: run in a thread)."""
    if not path.is_file():
        raise IngestError("not a regular file (gone, or a directory)")
    size = path.stat().st_size
    if size == 0:
        raise IngestError("file is empty")
    magnification, mpp = _stated_resolution(path)
    return ScanFacts(size, magnification, mpp)


def file_time(path: Path) -> datetime:
    """When the scanner finished writing the file (its modification time), in UTC."""
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)


class Ingestor:
    """Uploads scans and publishes their events; one producer and one S3 client for many files.

    ``magnification`` / ``mpp`` given by the scanner are used when the file states none.
    """

    def __init__(self, settings: Settings, bucket: IngestBucket, publish: Publisher) -> None:
        self.settings = settings
        self.bucket = bucket
        self._publish = publish

    async def ingest(self, path: Path, ids: SlideIds, *, magnification: float | None = None,
                     mpp: float | None = None, facts: ScanFacts | None = None) -> SlideScanned:
        """``facts``: the file's ``examine`` result when the caller already has it."""
        path = Path(path)
        facts = facts or await asyncio.to_thread(examine, path)
        key = ingest_key(ids.exam_id, ids.slide_number, key_name(path.name))
        stored = await self.bucket.upload_file(key, path)
        if stored.size == 0:
            raise IngestError("file is empty")
        event = SlideScanned(
            patient_id=ids.patient_id,
            exam_id=ids.exam_id,
            slide_number=ids.slide_number,
            ingest=stored.ref,
            original_filename=original_name(path),
            size_bytes=stored.size,  # size and checksum of the bytes actually uploaded
            sha256=stored.sha256,
            scanner_id=ids.scanner_id,
            magnification=facts.magnification or magnification,
            mpp=facts.mpp or mpp,
            body_part=ids.body_part,
            acquired_at=file_time(path),
        )
        await self._publish(event)
        # Exam and slide only: patient IDs and file names may identify the patient.
        log.info("scan.ingested", exam_id=ids.exam_id, slide_number=ids.slide_number,
                 size_bytes=stored.size, event_id=str(event.event_id))
        return event


class Publisher:
    """Publishes events with an aiokafka producer (acks=all), keyed by exam."""

    def __init__(self, producer: object) -> None:
        self._producer = producer

    async def __call__(self, event: SlideScanned) -> None:
        from core.kafka import send_event

        await send_event(self._producer, event.topic.value, event, key=event.kafka_key())


@asynccontextmanager
async def open_ingestor(settings: Settings) -> AsyncIterator[Ingestor]:
    """An ``Ingestor`` connected to the configured broker and ingest bucket."""
    from core.kafka import producer

    async with producer(settings, principal="scanner") as prod:
        yield Ingestor(settings, IngestBucket(settings.storage), Publisher(prod))
