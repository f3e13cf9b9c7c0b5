"""The tier sweep's day buckets on the real FerretDB: candidates are found by the equality key
``sweep_bucket`` one acquisition day at a time, follow every move, empty days are forgotten, and
a catalog written before the key is backfilled once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from catalog.repository import MIGRATIONS, SWEEP_DAYS, Catalog, document, image_id
from catalog.tiering import TierPolicy
from core.settings import Settings
from schemas.catalog import ImageRecord
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import PatientDischarged
from storage.scheduler import TierScheduler
from tests.integration.tierkit import services, stage_slide, uid

pytestmark = pytest.mark.integration


async def mid_candidates(catalog: Catalog, before: datetime) -> list[ImageRecord]:
    return [image async for page in catalog.sweep_pages(ImageState.LR, StorageTier.MID, acquired_before=before,
                                                         limit=7) for image in page]


async def stored_bucket(catalog: Catalog, image: ImageRecord) -> str:
    doc = await catalog.images.find_one({"_id": image_id(image.exam_id, image.slide_number, image.state)})
    assert doc is not None
    return str(doc[ImageRecord.SWEEP_FIELD])


async def test_the_sweep_finds_old_mid_slides_by_day_not_young_ones_nor_moved_ones(stack: Settings) -> None:
    now = datetime.now(UTC)
    old_day, young_day = now - timedelta(days=400), now - timedelta(days=10)
    async with services(stack) as svc:
        saved = {}
        for label, acquired in (("old", old_day), ("young", young_day)):
            patient, exam = uid("P"), uid("E")
            event = await stage_slide(svc, patient_id=patient, exam_id=exam, acquired_at=acquired)
            saved[label] = (await svc.saver.save(event)).image
            assert await stored_bucket(svc.catalog, saved[label]) == f"0/recent/{acquired:%Y-%m-%d}"
        # Both patients were discharged 300 days ago: their slides went to mid then (the old
        # one had been used within the age limit at that time).
        then = now - timedelta(days=300)
        earlier = TierScheduler(svc.catalog, svc.mover, TierPolicy(), clock=lambda: then)
        for image in saved.values():
            await earlier.on_discharge(PatientDischarged(patient_id=image.patient_id, discharged_at=then))
        old, young = (await svc.catalog.reload(saved["old"])), (await svc.catalog.reload(saved["young"]))
        assert old is not None and young is not None
        assert old.tier is StorageTier.MID and young.tier is StorageTier.MID
        assert await stored_bucket(svc.catalog, old) == f"0/mid/{old_day:%Y-%m-%d}"

        # The sweep's query: the old slide is past the cutoff, the young one is not.
        cutoff = now - timedelta(days=365)
        found = {(i.exam_id, i.slide_number) for i in await mid_candidates(svc.catalog, cutoff)}
        assert (old.exam_id, 1) in found and (young.exam_id, 1) not in found
        days = await svc.catalog.sweep_days_of(ImageState.LR, StorageTier.MID)
        assert days == sorted(days) and f"{old_day:%Y-%m-%d}" in days

        # The sweep itself moves it to long; it leaves the mid bucket and is in the long one.
        report = await svc.scheduler.sweep(now=now)
        assert {(m.exam_id, m.to_tier) for m in report.moves if m.exam_id in (old.exam_id, young.exam_id)} == {
            (old.exam_id, StorageTier.LONG)}
        moved = await svc.catalog.reload(old)
        assert moved is not None and moved.tier is StorageTier.LONG
        assert await stored_bucket(svc.catalog, moved) == f"0/long/{old_day:%Y-%m-%d}"
        assert old.exam_id not in {doc["exam_id"] async for doc in svc.catalog.images.find(
            {ImageRecord.SWEEP_FIELD: f"0/mid/{old_day:%Y-%m-%d}"})}
        assert (old.exam_id, 1) not in {(i.exam_id, i.slide_number) for i in await mid_candidates(svc.catalog, cutoff)}
        assert f"{old_day:%Y-%m-%d}" in await svc.catalog.sweep_days_of(ImageState.LR, StorageTier.LONG)


async def test_an_empty_day_is_forgotten_by_the_sweep(stack: Settings) -> None:
    async with services(stack) as svc:
        bucket = "0/mid/1990-01-01"  # no test image was acquired that day
        await svc.catalog.note_sweep_buckets([bucket])
        await svc.catalog.note_sweep_buckets([bucket])  # idempotent
        assert "1990-01-01" in await svc.catalog.sweep_days_of(ImageState.LR, StorageTier.MID)
        assert await mid_candidates(svc.catalog, datetime(1990, 1, 2, tzinfo=UTC)) == []
        assert await svc.catalog.sweep_days.find_one({"_id": bucket}) is None


async def test_a_catalog_written_before_the_key_is_backfilled_once(stack: Settings) -> None:
    async with services(stack) as svc:
        name = uid("bf_")
        db = svc.client[name]
        try:
            catalog = Catalog(db)
            acquired = datetime(2024, 5, 6, 7, 8, tzinfo=UTC)
            image = ImageRecord(exam_id=uid("E"), patient_id=uid("P"), slide_number=1, state=ImageState.LR,
                                tier=StorageTier.MID, acquired_at=acquired,
                                object=ObjectRef(bucket="slidestream-mid", key="lr/x/0001.tiff"))
            legacy = {k: v for k, v in document(image).items() if k != ImageRecord.SWEEP_FIELD}
            await catalog.images.insert_one(legacy)
            assert await mid_candidates(catalog, datetime(2025, 1, 1, tzinfo=UTC)) == []  # not yet findable

            assert await catalog.backfill_sweep_buckets() == 1
            assert await stored_bucket(catalog, image) == "0/mid/2024-05-06"
            assert await db[SWEEP_DAYS].find_one({"_id": "0/mid/2024-05-06"}) is not None
            assert [i.exam_id for i in await mid_candidates(catalog, datetime(2025, 1, 1, tzinfo=UTC))] == [
                image.exam_id]
            assert (await catalog.reload(image)) == image  # nothing else changed
            assert await db[MIGRATIONS].find_one({"_id": "sweep_bucket_v1"}) is not None
            await catalog.images.insert_one({**legacy, "_id": "later", "slide_number": 2})
            assert await catalog.backfill_sweep_buckets() == 0  # done once: one lookup afterwards
        finally:
            await svc.client.drop_database(name)
