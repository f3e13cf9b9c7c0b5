"""The catalog repository: patients, exams, images (SPEC 2's three layers), reports and the
audit log, over ``pymongo.AsyncMongoClient``. (Reading terminals come with the distribution
service, which defines their registry.)

Written for MongoDB and FerretDB alike, so it uses no multi-document transaction, no
``$lookup`` and no change stream. Instead:

* every write touches one document and is idempotent (``$setOnInsert`` upserts, inserts
  that treat a duplicate key as "already there", compare-and-set updates);
* referential integrity is kept by ordering: a patient row exists before its exam, an exam
  before its images, and the repository refuses an exam or image whose parent is missing
  or belongs to another patient; permanent LR images are never deleted;
* every change to an existing document is a compare-and-set through ``catalog.claims``
  (on the image's and report's ``revision``, on a patient's time fields), which holds on
  FerretDB too, whose updates are not atomic; so two workers can never both think they own
  a move, and no update overwrites another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalog.claims import Claims, compare_and_delete, compare_and_set
from catalog.errors import (
    CatalogError,
    ExamPatientMismatch,
    ReportConflict,
    UnknownExam,
    UnknownPatient,
)
from catalog.patient_status import apply_admission, apply_discharge, apply_exam
from schemas.catalog import (
    AuditEntry,
    CatalogRecord,
    ExamRecord,
    ImageRecord,
    PatientRecord,
    PendingMove,
    ReportRecord,
    db_now,
)
from schemas.common import ImageState, PatientIdentity, StorageTier

_CAS_ATTEMPTS = 20
# Point lookups in flight at once per batch lookup (well under the client's pool of 100).
_LOOKUP_CONCURRENCY = 16


def image_id(exam_id: str, slide_number: int, state: ImageState | int) -> str:
    return f"{exam_id}/{slide_number}/{int(state)}"


def natural_id(record: CatalogRecord) -> str:
    """The document ``_id`` of a record: its natural key as one string.

    Every point lookup and compare-and-set goes through ``_id``: MongoDB serves it from the
    primary index, and FerretDB's SQLite backend filters string ``_id`` equality inside
    SQLite, about ten times faster than other filters (which it evaluates in Go over the
    whole collection). The unique indexes on the natural-key fields stay as a second guard.
    """
    if isinstance(record, ImageRecord):
        return image_id(record.exam_id, record.slide_number, record.state)
    if len(record.key_fields) != 1:
        raise ValueError(f"{type(record).__name__} has no single-field natural key")
    return str(getattr(record, record.key_fields[0]))


def document(record: CatalogRecord) -> dict[str, Any]:
    """BSON document of ``record`` with its natural ``_id`` (what the repository inserts)."""
    return {"_id": natural_id(record), **record.to_document()}


def image_key(exam_id: str, slide_number: int, state: ImageState | int) -> dict[str, Any]:
    return {"_id": image_id(exam_id, slide_number, state)}


def _at_revision(image: ImageRecord) -> dict[str, Any]:
    """What a compare-and-set expects besides the ``_id``: the image unchanged since
    ``image`` was read. Scalars only: a sub-document or a dotted path in the filter makes
    FerretDB scan the whole collection instead of using its ``_id`` pushdown (seconds per
    update at 10,000 images)."""
    return {"revision": image.revision}


def _pending_document(image: ImageRecord, pending: PendingMove) -> dict[str, Any]:
    # The record's own BSON conversion (datetimes stay datetimes, enums become values).
    return image.model_copy(update={"pending_move": pending}).to_document()["pending_move"]


class Catalog:
    def __init__(self, db: AsyncDatabase, *, claims: Claims | None = None, point_queries: bool = False) -> None:
        """``point_queries``: ask for several keys with one equality query each rather than
        one ``$in`` (``MongoSettings.point_queries``)."""
        self.db = db
        self.point_queries = point_queries
        self.claims = claims or Claims(db)
        self.patients = db[PatientRecord.collection]
        self.exams = db[ExamRecord.collection]
        self.images = db[ImageRecord.collection]
        self.reports = db[ReportRecord.collection]
        self.audit_log = db[AuditEntry.collection]

    # --- patients ----------------------------------------------------------------------

    async def get_patient(self, patient_id: str) -> PatientRecord | None:
        doc = await self.patients.find_one({"_id": patient_id})
        return PatientRecord.from_document(doc) if doc else None

    async def patients_by_id(self, patient_ids: Iterable[str]) -> dict[str, PatientRecord]:
        """Point lookups by ``_id``, a few at a time: FerretDB pushes ``_id`` equality down to
        its backend's index but evaluates an ``$in`` over the whole collection (5.5 s for a
        sweep page's 500 patients among 10,000 on its PostgreSQL backend)."""
        gate = asyncio.Semaphore(_LOOKUP_CONCURRENCY)

        async def one(patient_id: str) -> PatientRecord | None:
            async with gate:
                return await self.get_patient(patient_id)

        found = await asyncio.gather(*(one(patient_id) for patient_id in sorted(set(patient_ids))))
        return {record.patient_id: record for record in found if record is not None}

    async def ensure_patient(self, patient_id: str) -> tuple[PatientRecord, bool]:
        """The patient's record, created (status unknown) if missing; True when created."""
        fresh = PatientRecord(patient_id=patient_id)
        try:
            result = await self.patients.update_one(
                {"_id": patient_id}, {"$setOnInsert": fresh.to_document()}, upsert=True)
            created = result.upserted_id is not None
        except DuplicateKeyError:  # a concurrent upsert won the race: the row exists
            created = False
        record = await self.get_patient(patient_id)
        if record is None:  # pragma: no cover - only if someone deletes it in between
            raise CatalogError("patient row vanished right after it was ensured")
        return record, created

    async def _update_patient(self, patient_id: str,
                              change: Callable[[PatientRecord], PatientRecord]) -> tuple[PatientRecord, bool]:
        """Apply a pure change with compare-and-set on the time fields; True if newly created."""
        created_any = False
        for _ in range(_CAS_ATTEMPTS):
            current, created = await self.ensure_patient(patient_id)
            created_any = created_any or created
            updated = change(current)
            if updated == current:
                return current, created_any
            before, after = current.to_document(), updated.to_document()
            expected = {name: before.get(name) for name in ("admitted_at", "discharged_at", "last_exam_at")}
            changes = {name: value for name, value in after.items() if before.get(name) != value}
            if await compare_and_set(self.patients, self.claims, patient_id, expected, {"$set": changes}):
                return updated, created_any
        raise CatalogError("patient record kept changing under concurrent updates; retry")

    async def record_admission(self, patient_id: str, at: datetime, *, visit_id: str | None = None,
                               ward: str | None = None,
                               identity: PatientIdentity | None = None) -> PatientRecord:
        record, _ = await self._update_patient(
            patient_id, lambda r: apply_admission(r, at, visit_id=visit_id, ward=ward, identity=identity))
        return record

    async def record_discharge(self, patient_id: str, at: datetime, *,
                               visit_id: str | None = None) -> tuple[PatientRecord, bool]:
        """The updated record, and whether the catalog knew the patient before."""
        known = await self.get_patient(patient_id) is not None
        record, _ = await self._update_patient(patient_id, lambda r: apply_discharge(r, at, visit_id=visit_id))
        return record, known

    async def record_exam_time(self, patient_id: str, at: datetime) -> PatientRecord:
        record, _ = await self._update_patient(patient_id, lambda r: apply_exam(r, at))
        return record

    # --- exams -------------------------------------------------------------------------

    async def get_exam(self, exam_id: str) -> ExamRecord | None:
        doc = await self.exams.find_one({"_id": exam_id})
        return ExamRecord.from_document(doc) if doc else None

    async def ensure_exam(self, exam_id: str, patient_id: str, exam_date: datetime,
                          body_part: str | None = None) -> ExamRecord:
        """The exam, created if missing. Its patient must exist and must be ``patient_id``."""
        if await self.get_patient(patient_id) is None:
            raise UnknownPatient("the exam's patient is not in the catalog")
        fresh = ExamRecord(exam_id=exam_id, patient_id=patient_id, exam_date=exam_date, body_part=body_part)
        try:
            await self.exams.update_one({"_id": exam_id}, {"$setOnInsert": fresh.to_document()}, upsert=True)
        except DuplicateKeyError:
            pass
        exam = await self.get_exam(exam_id)
        if exam is None:  # pragma: no cover
            raise CatalogError(f"exam {exam_id} vanished right after it was ensured")
        if exam.patient_id != patient_id:
            raise ExamPatientMismatch(exam_id)
        return exam

    async def exams_of_patient(self, patient_id: str) -> list[ExamRecord]:
        cursor = self.exams.find({"patient_id": patient_id}).sort("exam_date", DESCENDING)
        return [ExamRecord.from_document(doc) async for doc in cursor]

    # --- images ------------------------------------------------------------------------

    async def get_image(self, exam_id: str, slide_number: int, state: ImageState | int) -> ImageRecord | None:
        doc = await self.images.find_one(image_key(exam_id, slide_number, state))
        return ImageRecord.from_document(doc) if doc else None

    async def reload(self, image: ImageRecord) -> ImageRecord | None:
        return await self.get_image(image.exam_id, image.slide_number, image.state)

    async def _check_parent(self, image: ImageRecord) -> None:
        exam = await self.get_exam(image.exam_id)
        if exam is None:
            raise UnknownExam(image.exam_id)
        if exam.patient_id != image.patient_id:
            raise ExamPatientMismatch(image.exam_id)

    async def add_image(self, image: ImageRecord) -> tuple[ImageRecord, bool]:
        """Insert ``image`` under its existing exam. If that slide and state is already
        catalogued, nothing is written: the stored record and False are returned."""
        await self._check_parent(image)
        try:
            await self.images.insert_one(document(image))
            return image, True
        except DuplicateKeyError:
            existing = await self.reload(image)
            if existing is None:  # pragma: no cover
                raise CatalogError("image row vanished right after a duplicate-key insert") from None
            return existing, False

    async def put_hr_image(self, image: ImageRecord) -> ImageRecord:
        """Create or refresh the HR cache entry of a slide (state 1, tier temporary)."""
        if image.state is not ImageState.HR or image.tier is not StorageTier.TEMPORARY:
            raise ValueError("put_hr_image takes HR images in the temporary tier")
        await self._check_parent(image)
        doc = image.to_document()
        refresh = {name: doc[name] for name in ("object", "width", "height", "magnification")}
        for _ in range(_CAS_ATTEMPTS):
            current = await self.reload(image)
            if current is None:
                try:
                    await self.images.insert_one(document(image.model_copy(update={"revision": 1})))
                except DuplicateKeyError:
                    continue  # created meanwhile: refresh it instead
                stored = await self.reload(image)
                assert stored is not None
                return stored
            refreshed = await self._compare_and_set(current, refresh)
            if refreshed is not None:
                return refreshed
        raise CatalogError("HR image record kept changing under concurrent updates; retry")

    async def find_images(self, *, patient_id: str | None = None, exam_id: str | None = None,
                          slide_number: int | None = None, state: ImageState | int | None = None,
                          tier: StorageTier | None = None, limit: int = 10_000) -> list[ImageRecord]:
        """Images by patient, or by exam (and slide), optionally narrowed by state and tier."""
        if patient_id is None and exam_id is None:
            raise ValueError("give a patient ID or an exam ID")
        if slide_number is not None and exam_id is None:
            raise ValueError("a slide number needs its exam ID")
        flt: dict[str, Any] = {}
        if patient_id is not None:
            flt["patient_id"] = patient_id
        if exam_id is not None:
            flt["exam_id"] = exam_id
        if slide_number is not None:
            flt["slide_number"] = slide_number
        if state is not None:
            flt["state"] = int(state)
        if tier is not None:
            flt["tier"] = tier.value
        cursor = self.images.find(flt).sort([("exam_id", ASCENDING), ("slide_number", ASCENDING),
                                              ("state", ASCENDING)]).limit(limit)
        return [ImageRecord.from_document(doc) async for doc in cursor]

    async def images_in_tier(self, state: ImageState, tier: StorageTier, *,
                             acquired_before: datetime | None = None, acquired_after: datetime | None = None,
                             limit: int = 1000) -> list[ImageRecord]:
        """Images of one state and tier, oldest acquisition first (page with ``acquired_after``)."""
        flt: dict[str, Any] = {"state": int(state), "tier": tier.value}
        window: dict[str, datetime] = {}
        if acquired_before is not None:
            window["$lt"] = acquired_before
        if acquired_after is not None:
            window["$gt"] = acquired_after
        if window:
            flt["acquired_at"] = window
        cursor = self.images.find(flt).sort("acquired_at", ASCENDING).limit(limit)
        return [ImageRecord.from_document(doc) async for doc in cursor]

    async def accessed_since(self, state: ImageState, tier: StorageTier, since: datetime, *,
                             limit: int = 1000) -> list[ImageRecord]:
        flt = {"state": int(state), "tier": tier.value, "last_accessed_at": {"$gte": since}}
        cursor = self.images.find(flt).sort("last_accessed_at", DESCENDING).limit(limit)
        return [ImageRecord.from_document(doc) async for doc in cursor]

    async def record_access(self, image: ImageRecord, at: datetime | None = None) -> None:
        """Count a read. Claimed like every other write (so it can never undo a concurrent
        move on FerretDB), but without a new revision, so it never disturbs a move."""
        change = {"$inc": {"access_count": 1}, "$set": {"last_accessed_at": at or db_now()}}
        current: ImageRecord | None = image  # the caller's record first: usually still current
        for _ in range(_CAS_ATTEMPTS):
            if current is None:
                return
            if await compare_and_set(self.images, self.claims, natural_id(current), _at_revision(current), change):
                return
            current = await self.reload(image)
        raise CatalogError("image record kept changing under concurrent updates; access not counted")

    # --- tier moves (compare-and-set on the image's revision) ---------------------------

    async def _compare_and_set(self, image: ImageRecord, changes: dict[str, Any]) -> ImageRecord | None:
        """``changes`` and the next revision, if the image is still at ``image.revision``."""
        doc = await compare_and_set(self.images, self.claims, natural_id(image), _at_revision(image),
                                    {"$set": changes, "$inc": {"revision": 1}})
        return ImageRecord.from_document(doc) if doc else None

    async def begin_move(self, image: ImageRecord, pending: PendingMove) -> ImageRecord | None:
        """Claim ``image`` for a move; None if it changed since read (moved, or already moving)."""
        if image.pending_move is not None:
            return None
        return await self._compare_and_set(image, {"pending_move": _pending_document(image, pending)})

    async def advance_move(self, image: ImageRecord, to_step: str) -> ImageRecord | None:
        """Record that the move reached ``to_step``; None if the image changed meanwhile."""
        assert image.pending_move is not None
        advanced = image.pending_move.model_copy(update={"step": to_step})
        return await self._compare_and_set(image, {"pending_move": _pending_document(image, advanced)})

    async def relocate(self, image: ImageRecord) -> ImageRecord | None:
        """The one atomic catalog update of a move: the image now lives at the marker's target."""
        pending = image.pending_move
        assert pending is not None and pending.to_tier is not None and pending.target is not None
        updated = pending.model_copy(update={"step": "catalog_updated"})
        return await self._compare_and_set(image, {
            "tier": pending.to_tier.value, "object": pending.target.model_dump(),
            "pending_move": _pending_document(image, updated)})

    async def clear_move(self, image: ImageRecord) -> ImageRecord | None:
        return await self._compare_and_set(image, {"pending_move": None})

    async def delete_image(self, image: ImageRecord) -> bool:
        """Remove an HR cache entry whose objects are gone (only if unchanged since read)."""
        if image.state is not ImageState.HR:
            raise ValueError("permanent LR images are never deleted from the catalog")
        return await compare_and_delete(self.images, self.claims, natural_id(image), _at_revision(image))

    async def pending_moves(self, started_before: datetime, *, limit: int = 1000) -> list[ImageRecord]:
        flt = {"pending_move.started_at": {"$lt": started_before}}
        cursor = self.images.find(flt).sort("pending_move.started_at", ASCENDING).limit(limit)
        return [ImageRecord.from_document(doc) async for doc in cursor]

    # --- reports -----------------------------------------------------------------------

    async def get_report(self, exam_id: str) -> ReportRecord | None:
        doc = await self.reports.find_one({"_id": exam_id})
        return ReportRecord.from_document(doc) if doc else None

    async def save_report(self, report: ReportRecord, *, expected_revision: int | None) -> ReportRecord:
        """Create (``expected_revision`` None) or update a report if nobody changed it since
        the caller read ``expected_revision``; the stored report has the next revision."""
        if await self.get_exam(report.exam_id) is None:
            raise UnknownExam(report.exam_id)
        now = db_now()
        if expected_revision is None:
            fresh = report.model_copy(update={"revision": 0, "created_at": now, "updated_at": now})
            try:
                await self.reports.insert_one(document(fresh))
            except DuplicateKeyError:
                raise ReportConflict(report.exam_id, -1) from None
            return fresh
        doc = report.to_document()
        changes = {name: doc[name] for name in ("author", "findings", "diagnosis", "status")}
        changes.update(revision=expected_revision + 1, updated_at=now)
        stored = await compare_and_set(self.reports, self.claims, report.exam_id,
                                       {"revision": expected_revision}, {"$set": changes})
        if stored is None:
            raise ReportConflict(report.exam_id, expected_revision)
        return ReportRecord.from_document(stored)

    # --- audit -------------------------------------------------------------------------

    async def audit(self, entry: AuditEntry) -> None:
        await self.audit_log.insert_one(entry.to_document())

    async def exam_history(self, exam_id: str, *, limit: int = 100) -> list[AuditEntry]:
        cursor = self.audit_log.find({"target.exam_id": exam_id}).sort("at", DESCENDING).limit(limit)
        return [AuditEntry.from_document(doc) async for doc in cursor]
