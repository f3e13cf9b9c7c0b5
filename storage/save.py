"""The save function of SPEC 2: a QC-passed LR slide goes into the recent tier and the mirror,
and into the catalog (patient -> exam -> image), then ``slide.stored`` is published.

Order, so a crash anywhere is repaired by processing the same event again:
copy to recent and verify -> copy to mirror and verify -> patient row -> exam row ->
image row -> ``slide.stored`` -> release the ingest objects (``storage.ingest_release``: the
LR staging object and, unless the HR cut still needs it, the original upload are deleted).
Object keys are fixed by the slide's IDs, so a repeat overwrites the same objects with the
same bytes; catalog writes are idempotent upserts.

A duplicate event (same slide, same checksum) changes nothing; it re-publishes
``slide.stored`` with the same deterministic event id, in case the first attempt died just
before publishing, and releases the ingest objects (already gone: nothing to do), in case it
died before that. The same slide with a different checksum is refused: permanent images
are never replaced silently.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import structlog

from catalog.errors import ExamPatientMismatch
from catalog.provenance import check_not_future
from catalog.repository import Catalog
from core.kafka import EventSink
from schemas.catalog import AuditEntry, ImageRecord, db_now
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import SlideQcPassed, SlideStored
from schemas.layout import lr_key
from storage.errors import ChecksumMismatch, ImageConflict, MissingObject
from storage.ingest_release import IngestRelease, check_ingest_refs
from storage.objects import ObjectStore

log = structlog.get_logger(__name__)

_STORED_NAMESPACE = uuid.UUID("0b7d5c2e-5a43-4c1b-8f0e-2f5e3c9d7a61")


@dataclass(frozen=True)
class SaveResult:
    status: Literal["stored", "duplicate"]
    image: ImageRecord
    event: SlideStored


def stored_event_id(exam_id: str, slide_number: int, sha256: str) -> uuid.UUID:
    return uuid.uuid5(_STORED_NAMESPACE, f"{exam_id}/{slide_number}/{sha256}")


class SaveService:
    def __init__(self, catalog: Catalog, store: ObjectStore, publish: EventSink, *,
                 actor: str = "save-agent") -> None:
        self.catalog = catalog
        self.store = store
        self.publish = publish
        self.actor = actor
        self.release = IngestRelease(catalog, store)

    async def save(self, event: SlideQcPassed) -> SaveResult:
        check_ingest_refs(event, self.store.bucket("ingest"))  # before anything is written
        check_not_future("acquisition time", event.acquired_at, db_now())
        existing = await self.catalog.get_image(event.exam_id, event.slide_number, ImageState.LR)
        if existing is not None:
            return await self._duplicate(event, existing)

        exam = await self.catalog.get_exam(event.exam_id)
        if exam is not None and exam.patient_id != event.patient_id:
            raise ExamPatientMismatch(event.exam_id)

        key = lr_key(event.exam_id, event.slide_number)
        recent = self.store.ref(StorageTier.RECENT, key)
        mirror = self.store.ref("mirror", key)
        try:
            info = await self.store.stat(event.lr)
            if info is None:
                raise MissingObject(event.lr, "LR slide")
            await self._copy_verified(event.lr, recent, event.sha256)
            await self._copy_verified(event.lr, mirror, event.sha256)
        except MissingObject:
            # Another worker given the same event (a rebalance) may have saved the slide and
            # released its LR meanwhile: then this is a duplicate, not a missing object.
            existing = await self.catalog.get_image(event.exam_id, event.slide_number, ImageState.LR)
            if existing is None:
                raise
            return await self._duplicate(event, existing)

        await self.catalog.ensure_patient(event.patient_id)
        await self.catalog.ensure_exam(event.exam_id, event.patient_id, event.acquired_at, event.body_part)
        await self.catalog.record_exam_time(event.patient_id, event.acquired_at)
        image = ImageRecord(
            exam_id=event.exam_id, patient_id=event.patient_id, slide_number=event.slide_number,
            state=ImageState.LR, tier=StorageTier.RECENT, object=recent, mirror=mirror,
            acquired_at=event.acquired_at, sha256=event.sha256, size_bytes=event.size_bytes,
            width=event.width, height=event.height, magnification=event.magnification, mpp=event.mpp,
        )
        image, created = await self.catalog.add_image(image)
        if not created and image.sha256 != event.sha256:  # lost a race with a different scan
            raise ImageConflict(event.exam_id, event.slide_number)
        stored = self._stored_event(image)
        await self.publish(stored)
        await self.catalog.audit(AuditEntry(
            at=db_now(), actor=self.actor, action="save", outcome="ok",
            target={"exam_id": image.exam_id, "slide_number": image.slide_number, "state": 0},
            detail={"tier": image.tier.value, "size_bytes": image.size_bytes}))
        await self.release.release(event, saved=True)
        log.info("save.stored", exam_id=event.exam_id, slide=event.slide_number, size_bytes=event.size_bytes)
        return SaveResult("stored" if created else "duplicate", image, stored)

    async def _duplicate(self, event: SlideQcPassed, existing: ImageRecord) -> SaveResult:
        if existing.sha256 != event.sha256:
            raise ImageConflict(event.exam_id, event.slide_number)
        if existing.patient_id != event.patient_id:
            raise ExamPatientMismatch(event.exam_id)
        stored = self._stored_event(existing)
        await self.publish(stored)
        await self.release.release(event, saved=True)
        log.info("save.duplicate", exam_id=event.exam_id, slide=event.slide_number)
        return SaveResult("duplicate", existing, stored)

    async def _copy_verified(self, source: ObjectRef, target: ObjectRef, sha256: str) -> None:
        try:
            await self.store.copy(source, target, sha256=sha256)
        except FileNotFoundError:
            raise MissingObject(source, "LR slide") from None
        found = await self.store.checksum(target)
        if found is None or found[0] != sha256:
            await self.store.delete(target)  # never leave bytes that do not match the event
            raise ChecksumMismatch(source, sha256, found[0] if found else "missing")

    def _stored_event(self, image: ImageRecord) -> SlideStored:
        assert image.sha256 is not None and image.mirror is not None and image.size_bytes
        return SlideStored(
            event_id=stored_event_id(image.exam_id, image.slide_number, image.sha256),
            patient_id=image.patient_id, exam_id=image.exam_id, slide_number=image.slide_number,
            state=image.state, tier=image.tier,
            object=image.object, mirror=image.mirror, sha256=image.sha256, size_bytes=image.size_bytes,
        )
