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
import math
from collections.abc import AsyncGenerator, Callable, Iterable
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

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
# The days in use per (state, tier) of the sweep's equality key (``ImageRecord.sweep_bucket``):
# one small document per bucket, ``_id`` the bucket, ``group`` "<state>/<tier>", ``day`` the
# ISO day. Written (insert, duplicate ignored) before and after an image enters a bucket,
# removed by the sweep when it finds the bucket empty (``Catalog.sweep_pages``).
SWEEP_DAYS = "sweep_days"
# One-time data migrations done on this catalog (``_id`` the migration's name).
MIGRATIONS = "migrations"
_SWEEP_BACKFILL = "sweep_bucket_v1"
# Day buckets the sweep reads at once: first, and at most (then as many as a page needs).
_SWEEP_LOOKAHEAD = 4
_SWEEP_MAX_LOOKAHEAD = 16
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


def sweep_group(state: ImageState | int, tier: StorageTier) -> str:
    return f"{int(state)}/{tier.value}"


def sweep_day_document(bucket: str) -> dict[str, Any]:
    """The ``sweep_days`` entry of a sweep bucket ("<state>/<tier>/<YYYY-MM-DD>")."""
    group, _, day = bucket.rpartition("/")
    return {"_id": bucket, "group": group, "day": day}


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
        self.sweep_days = db[SWEEP_DAYS]

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
        await self.note_sweep_buckets([image.sweep_bucket])
        try:
            await self.images.insert_one(document(image))
        except DuplicateKeyError:
            existing = await self.reload(image)
            if existing is None:  # pragma: no cover
                raise CatalogError("image row vanished right after a duplicate-key insert") from None
            await self.note_sweep_buckets([existing.sweep_bucket])
            return existing, False
        await self.note_sweep_buckets([image.sweep_bucket])
        return image, True

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
                await self.note_sweep_buckets([image.sweep_bucket])
                try:
                    await self.images.insert_one(document(image.model_copy(update={"revision": 1})))
                except DuplicateKeyError:
                    continue  # created meanwhile: refresh it instead
                await self.note_sweep_buckets([image.sweep_bucket])
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

    # --- the tier sweep's day buckets ---------------------------------------------------

    async def note_sweep_buckets(self, buckets: Iterable[str]) -> None:
        """Record that images are in these sweep buckets (idempotent: an insert per bucket,
        an existing entry is left as it is)."""
        docs = [sweep_day_document(bucket) for bucket in sorted(set(buckets))]
        if len(docs) == 1:
            try:
                await self.sweep_days.insert_one(docs[0])
            except DuplicateKeyError:
                pass
        elif docs:
            try:
                await self.sweep_days.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                    raise

    async def sweep_days_of(self, state: ImageState, tier: StorageTier) -> list[str]:
        """The acquisition days (ISO, oldest first) that have or had images of this state and
        tier (one equality query on a collection of a few thousand entries)."""
        cursor = self.sweep_days.find({"group": sweep_group(state, tier)}, {"day": 1})
        return sorted({doc["day"] async for doc in cursor if isinstance(doc.get("day"), str)})

    async def _forget_empty_bucket(self, bucket: str) -> None:
        """Drop the entry of a bucket found empty. An image written into it meanwhile notes
        the bucket again after its write; the re-check covers a write between our empty read
        and the delete, so an entry is never lost for an image that is there."""
        await self.sweep_days.delete_one({"_id": bucket})
        if await self.images.find_one({ImageRecord.SWEEP_FIELD: bucket}, {"_id": 1}) is not None:
            await self.note_sweep_buckets([bucket])

    async def sweep_pages(self, state: ImageState, tier: StorageTier, *, acquired_before: datetime | None = None,
                          limit: int = 1000) -> AsyncGenerator[list[ImageRecord], None]:
        """Images of one state and tier acquired before ``acquired_before`` (all if None), in
        pages of ``limit``, oldest acquisition day first: the tier sweep's candidates.

        FerretDB v1 evaluates range filters and sorts by reading every document, so this asks
        one equality query per day (``{"sweep_bucket": "<state>/<tier>/<day>"}``, pushed down
        to PostgreSQL's GIN index) instead of one ``acquired_at < cutoff`` query sorted by age.
        A bucket is read whole before its images are handed out, so moves the caller makes
        while paging do not disturb the walk. Within a day the images are sorted by acquisition
        only for a stable order: the sweep's decisions do not depend on the order of candidates
        (each image is judged alone), only the oldest days must come first."""
        last_day = None if acquired_before is None else ImageRecord.sweep_bucket_of(
            state, tier, acquired_before).rpartition("/")[2]
        group = sweep_group(state, tier)
        days = [day for day in await self.sweep_days_of(state, tier) if last_day is None or day <= last_day]

        async def read(day: str) -> list[ImageRecord]:
            bucket = f"{group}/{day}"
            docs = [doc async for doc in self.images.find({ImageRecord.SWEEP_FIELD: bucket})]
            if not docs:
                await self._forget_empty_bucket(bucket)
                return []
            # The stored key is re-derived, so a stale one (written by an older version) never
            # makes an image a candidate of the wrong tier.
            images = [image for image in map(ImageRecord.from_document, docs) if image.sweep_bucket == bucket]
            if acquired_before is not None and day == last_day:
                images = [image for image in images if image.acquired_at < acquired_before]
            images.sort(key=lambda image: (image.acquired_at, image.exam_id, image.slide_number))
            return images

        pending: list[ImageRecord] = []
        start, read_days, read_images = 0, 0, 0
        while start < len(days):
            # Several days at once (in order), as many as the days read so far say the page
            # still needs: a round trip per day would dominate where days hold few images.
            average = read_images / read_days if read_days else 0.0
            wanted = (limit - len(pending)) / max(average, 1.0) if average else _SWEEP_LOOKAHEAD
            window = days[start:start + max(1, min(_SWEEP_MAX_LOOKAHEAD, math.ceil(wanted)))]
            start += len(window)
            for images in await asyncio.gather(*map(read, window)):
                pending.extend(images)
                read_days, read_images = read_days + 1, read_images + len(images)
            while len(pending) >= limit:
                yield pending[:limit]
                pending = pending[limit:]
        if pending:
            yield pending

    async def backfill_sweep_buckets(self, *, concurrency: int = _LOOKUP_CONCURRENCY) -> int:
        """One-time migration of a catalog written before the sweep key: give every image
        document its ``sweep_bucket`` and note its day. Idempotent and safe beside running
        writers (each update is a compare-and-set on the image's revision); remembered in
        ``migrations`` so later calls cost one lookup. Returns the images updated."""
        migrations = self.db[MIGRATIONS]
        if await migrations.find_one({"_id": _SWEEP_BACKFILL}) is not None:
            return 0
        gate = asyncio.Semaphore(concurrency)
        updated = 0

        async def one(doc: dict[str, Any]) -> None:
            nonlocal updated
            async with gate:
                for _ in range(_CAS_ATTEMPTS):
                    image = ImageRecord.from_document(doc)
                    if doc.get(ImageRecord.SWEEP_FIELD) == image.sweep_bucket:
                        return
                    await self.note_sweep_buckets([image.sweep_bucket])
                    if await compare_and_set(self.images, self.claims, doc["_id"], _at_revision(image),
                                             {"$set": {ImageRecord.SWEEP_FIELD: image.sweep_bucket}}):
                        updated += 1
                        return
                    fresh = await self.images.find_one({"_id": doc["_id"]})
                    if fresh is None:
                        return
                    doc = fresh
                raise CatalogError("image record kept changing during the sweep key backfill; retry")

        chunk: list[dict[str, Any]] = []
        async for doc in self.images.find({ImageRecord.SWEEP_FIELD: {"$exists": False}}):
            chunk.append(doc)
            if len(chunk) >= 1000:
                await asyncio.gather(*(one(d) for d in chunk))
                chunk = []
        await asyncio.gather(*(one(d) for d in chunk))
        try:
            await migrations.insert_one({"_id": _SWEEP_BACKFILL, "at": db_now(), "images": updated})
        except DuplicateKeyError:
            pass
        return updated

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
        bucket = image.model_copy(update={"tier": pending.to_tier}).sweep_bucket
        await self.note_sweep_buckets([bucket])  # before: a crash after the update leaves it noted
        moved = await self._compare_and_set(image, {
            "tier": pending.to_tier.value, "object": pending.target.model_dump(),
            ImageRecord.SWEEP_FIELD: bucket, "pending_move": _pending_document(image, updated)})
        if moved is not None:
            await self.note_sweep_buckets([bucket])  # after: a sweep may have dropped it meanwhile
        return moved

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
