"""The tier sweep's equality key: derived from state, tier and the UTC acquisition day, written
into every image document, never read back into the record (so it cannot disagree)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import bson

from catalog.indexes import EQUALITY_FIELDS, INDEXES
from catalog.repository import SWEEP_DAYS, document, sweep_day_document, sweep_group
from schemas.catalog import ImageRecord
from schemas.common import ImageState, ObjectRef, StorageTier


def image(tier: StorageTier = StorageTier.MID, acquired_at: datetime = datetime(2025, 3, 4, 23, 59, tzinfo=UTC),
          state: ImageState = ImageState.LR) -> ImageRecord:
    return ImageRecord(exam_id="E1", patient_id="P1", slide_number=2, state=state, tier=tier,
                       object=ObjectRef(bucket="slidestream-mid", key="lr/E1/0002.tiff"), acquired_at=acquired_at)


def test_the_key_is_state_tier_and_utc_day() -> None:
    assert image().sweep_bucket == "0/mid/2025-03-04"
    assert image(StorageTier.TEMPORARY, state=ImageState.HR).sweep_bucket == "1/temporary/2025-03-04"
    # An acquisition given in another zone falls on its UTC day.
    east = datetime(2025, 3, 5, 1, 30, tzinfo=timezone(timedelta(hours=3)))
    assert image(acquired_at=east).sweep_bucket == "0/mid/2025-03-04"
    assert ImageRecord.sweep_bucket_of(0, StorageTier.LONG, datetime(2024, 1, 1, tzinfo=UTC)) == "0/long/2024-01-01"


def test_the_key_follows_every_change_of_tier_and_is_written_into_the_document() -> None:
    record = image()
    moved = record.model_copy(update={"tier": StorageTier.LONG})  # no validators run on a copy
    assert moved.sweep_bucket == "0/long/2025-03-04"
    assert document(record)[ImageRecord.SWEEP_FIELD] == "0/mid/2025-03-04"
    assert moved.to_document()[ImageRecord.SWEEP_FIELD] == "0/long/2025-03-04"


def test_a_stored_key_is_never_read_back() -> None:
    record = image()
    stored = bson.decode(bson.encode(document(record)))
    assert ImageRecord.from_document(stored) == record
    stale = {**stored, ImageRecord.SWEEP_FIELD: "0/recent/1999-01-01"}
    assert ImageRecord.from_document(stale).sweep_bucket == "0/mid/2025-03-04"
    older = {key: value for key, value in stored.items() if key != ImageRecord.SWEEP_FIELD}  # before the key
    assert ImageRecord.from_document(older) == record


def test_day_entries_and_groups() -> None:
    assert sweep_group(ImageState.LR, StorageTier.MID) == "0/mid"
    assert sweep_day_document("0/mid/2025-03-04") == {"_id": "0/mid/2025-03-04", "group": "0/mid", "day": "2025-03-04"}


def test_the_sweep_queries_are_equality_lookups_with_indexes() -> None:
    assert ImageRecord.SWEEP_FIELD in EQUALITY_FIELDS["images"]
    assert "group" in EQUALITY_FIELDS[SWEEP_DAYS]
    keyed = {(spec.collection, spec.keys[0][0]) for spec in INDEXES}
    assert ("images", ImageRecord.SWEEP_FIELD) in keyed and (SWEEP_DAYS, "group") in keyed
