"""The catalog repository on the real FerretDB: unique keys, referential integrity, order-
independent patient status, reports, terminals, audit, lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo.errors import DuplicateKeyError

from catalog.errors import ExamPatientMismatch, ReportConflict, UnknownExam, UnknownPatient
from catalog.indexes import INDEXES
from catalog.lease import Lease
from core.settings import Settings
from schemas.catalog import AuditEntry, ImageRecord, ReportRecord
from schemas.common import ImageState, ObjectRef, StorageTier
from tests.integration.tierkit import services, uid

pytestmark = pytest.mark.integration
T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


def lr_image(exam_id: str, patient_id: str, slide: int = 1) -> ImageRecord:
    return ImageRecord(exam_id=exam_id, patient_id=patient_id, slide_number=slide, state=ImageState.LR,
                       tier=StorageTier.RECENT,
                       object=ObjectRef(bucket="slidestream-recent", key=f"lr/{exam_id}/{slide:04d}.tiff"),
                       acquired_at=T0, sha256="ab" * 32, size_bytes=10)


async def test_every_declared_index_exists(stack: Settings) -> None:
    async with services(stack) as svc:
        for spec in INDEXES:
            names = [ix["name"] async for ix in await svc.catalog.db[spec.collection].list_indexes()]
            assert spec.name in names, f"{spec.collection}.{spec.name} missing"


async def test_exam_needs_its_patient_and_image_needs_its_exam(stack: Settings) -> None:
    async with services(stack) as svc:
        cat = svc.catalog
        patient, other, exam = uid("P"), uid("P"), uid("E")
        with pytest.raises(UnknownPatient):
            await cat.ensure_exam(exam, patient, T0)
        with pytest.raises(UnknownExam):
            await cat.add_image(lr_image(exam, patient))
        assert await cat.get_exam(exam) is None and await cat.get_image(exam, 1, 0) is None

        await cat.ensure_patient(patient)
        await cat.ensure_patient(other)
        await cat.ensure_exam(exam, patient, T0)
        with pytest.raises(ExamPatientMismatch):
            await cat.ensure_exam(exam, other, T0)
        with pytest.raises(ExamPatientMismatch):
            await cat.add_image(lr_image(exam, other))
        stored, created = await cat.add_image(lr_image(exam, patient))
        assert created and stored.tier is StorageTier.RECENT


async def test_unique_keys_hold_and_repeated_writes_change_nothing(stack: Settings) -> None:
    async with services(stack) as svc:
        cat = svc.catalog
        patient, exam = uid("P"), uid("E")
        first, created = await cat.ensure_patient(patient)
        again, created_again = await cat.ensure_patient(patient)
        assert created and not created_again and first == again
        await cat.ensure_exam(exam, patient, T0)
        await cat.ensure_exam(exam, patient, T0 + timedelta(days=1))  # first exam date kept
        assert (await cat.get_exam(exam)).exam_date == T0
        image = lr_image(exam, patient)
        await cat.add_image(image)
        existing, created = await cat.add_image(image.model_copy(update={"sha256": "cd" * 32}))
        assert not created and existing.sha256 == "ab" * 32
        with pytest.raises(DuplicateKeyError):
            await cat.images.insert_one(image.to_document())
        with pytest.raises(DuplicateKeyError):
            await cat.patients.insert_one({"patient_id": patient})
        assert await cat.images.count_documents({"exam_id": exam}) == 1


async def test_patient_status_is_right_whatever_the_event_order(stack: Settings) -> None:
    async with services(stack) as svc:
        cat = svc.catalog
        patient = uid("P")
        # Discharge arrives before the admission it closes, then a late duplicate admission.
        record, known = await cat.record_discharge(patient, T0 + timedelta(days=3))
        assert not known and record.status == "discharged"
        record = await cat.record_admission(patient, T0, ward="W1")
        assert record.status == "discharged"
        record = await cat.record_admission(patient, T0 + timedelta(days=10), ward="W2")
        assert record.status == "admitted" and record.ward == "W2"
        record = await cat.record_admission(patient, T0, ward="W1")  # stale repeat
        stored = await cat.get_patient(patient)
        assert stored.status == "admitted" and stored.ward == "W2"
        assert stored.admitted_at == T0 + timedelta(days=10) and stored.discharged_at == T0 + timedelta(days=3)


async def test_queries_by_patient_exam_slide_and_state(stack: Settings) -> None:
    async with services(stack) as svc:
        cat = svc.catalog
        patient, exam_a, exam_b = uid("P"), uid("E"), uid("E")
        await cat.ensure_patient(patient)
        for exam in (exam_a, exam_b):
            await cat.ensure_exam(exam, patient, T0)
            for slide in (1, 2):
                await cat.add_image(lr_image(exam, patient, slide))
        assert len(await cat.find_images(patient_id=patient)) == 4
        assert [i.slide_number for i in await cat.find_images(exam_id=exam_a)] == [1, 2]
        only = await cat.find_images(exam_id=exam_b, slide_number=2, state=ImageState.LR)
        assert [(i.exam_id, i.slide_number) for i in only] == [(exam_b, 2)]
        assert await cat.find_images(patient_id=patient, state=ImageState.HR) == []
        with pytest.raises(ValueError):
            await cat.find_images(slide_number=1)


async def test_report_updates_use_optimistic_concurrency(stack: Settings) -> None:
    async with services(stack) as svc:
        cat = svc.catalog
        patient, exam = uid("P"), uid("E")
        with pytest.raises(UnknownExam):
            await cat.save_report(ReportRecord(exam_id=exam, author="dr-a"), expected_revision=None)
        await cat.ensure_patient(patient)
        await cat.ensure_exam(exam, patient, T0)
        first = await cat.save_report(ReportRecord(exam_id=exam, author="dr-a", findings="x"), expected_revision=None)
        assert first.revision == 0
        second = await cat.save_report(first.model_copy(update={"findings": "y"}), expected_revision=0)
        assert second.revision == 1 and second.findings == "y"
        with pytest.raises(ReportConflict):  # someone still holding revision 0
            await cat.save_report(first.model_copy(update={"findings": "z"}), expected_revision=0)
        assert (await cat.get_report(exam)).findings == "y"


async def test_audit_entries_form_an_exam_history(stack: Settings) -> None:
    async with services(stack) as svc:
        cat = svc.catalog
        exam = uid("E")
        await cat.audit(AuditEntry(actor="t", action="retrieve", outcome="ok", target={"exam_id": exam}))
        history = await cat.exam_history(exam)
        assert len(history) == 1 and history[0].action == "retrieve"


async def test_lease_has_one_holder_until_it_expires(stack: Settings) -> None:
    async with services(stack) as svc:
        name = uid("lease-")
        a = Lease(svc.catalog.db, name, "worker-a", timedelta(seconds=30))
        b = Lease(svc.catalog.db, name, "worker-b", timedelta(seconds=30))
        assert await a.acquire(T0)
        assert not await b.acquire(T0 + timedelta(seconds=5))
        assert await a.acquire(T0 + timedelta(seconds=10))  # renewal by the holder
        assert await b.acquire(T0 + timedelta(seconds=41))  # a's lease ran out
        assert not await a.acquire(T0 + timedelta(seconds=42))


async def test_an_exam_pages_slides_are_the_same_whichever_query_shape_the_backend_prefers(stack: Settings) -> None:
    """One $in (FerretDB's SQLite backend, MongoDB) or one equality per exam (its PostgreSQL
    backend): the worklist gets each exam's LR slides in slide order either way."""
    from catalog.exam_search import lr_slides_of
    from catalog.repository import Catalog

    async with services(stack) as svc:
        cat = svc.catalog
        patient, exams = uid("P"), [uid("E") for _ in range(3)]
        await cat.ensure_patient(patient)
        for count, exam in zip((3, 1, 0), exams, strict=True):
            await cat.ensure_exam(exam, patient, T0)
            for slide in reversed(range(1, count + 1)):  # stored out of order
                await cat.add_image(lr_image(exam, patient, slide))
        shapes = [await lr_slides_of(Catalog(cat.db, point_queries=points), exams) for points in (False, True)]
        for found in shapes:
            assert {e: [i.slide_number for i in images] for e, images in found.items()} == {
                exams[0]: [1, 2, 3], exams[1]: [1], exams[2]: []}
