"""Event and catalog record contracts: round trips, strictness and readable errors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from uuid import UUID

import bson
import pytest
from pydantic import ValidationError

from core.settings import Settings
from schemas.catalog import CATALOG_MODELS, AuditEntry, ImageRecord, PatientRecord
from schemas.common import ImageState, ObjectRef, PatientIdentity, StorageTier
from schemas.events import (
    DeadLetter,
    Event,
    PatientAdmitted,
    Region,
    SlideScanned,
    SlideStored,
    TileRef,
    UpscaleRequested,
)
from schemas.examples import EXAM_ID, IDENTITY, PATIENT_ID, example_events, example_records
from schemas.ids import is_valid_id
from schemas.registry import EVENT_MODELS, EventValidationError, parse_any_event, parse_event
from schemas.topics import Priority, Topic

EVENTS = example_events()
RECORDS = example_records()


def _id(obj: object) -> str:
    return type(obj).__name__


def _scanned(**changes: object) -> dict:
    document = json.loads(next(e for e in EVENTS if isinstance(e, SlideScanned)).model_dump_json())
    document.update(changes)
    return document


def _reason(topic: Topic, document: dict) -> EventValidationError:
    with pytest.raises(EventValidationError) as info:
        parse_event(topic, json.dumps(document).encode())
    return info.value


# --- registry ---------------------------------------------------------------------------


def test_every_topic_has_exactly_one_event_model() -> None:
    assert set(EVENT_MODELS) == set(Topic)
    for topic, model in EVENT_MODELS.items():
        assert model.model_fields["event_type"].default == topic.value


def test_examples_cover_every_event_model_and_record() -> None:
    assert {type(e) for e in EVENTS} == set(EVENT_MODELS.values())
    assert {type(r) for r in RECORDS} == set(CATALOG_MODELS)


# --- JSON round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_event_json_round_trip(event: Event) -> None:
    raw = event.to_json_bytes()
    parsed = parse_event(event.topic, raw)
    assert parsed == event
    assert type(parsed) is type(event)
    assert parsed.to_json_bytes() == raw
    assert parse_any_event(raw) == event


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_event_json_shape(event: Event) -> None:
    document = json.loads(event.to_json_bytes())
    assert document["schema_version"] == (2 if isinstance(event, DeadLetter) else 1)  # v2: redacted
    assert document["event_type"] == event.topic.value
    assert UUID(document["event_id"]) == event.event_id
    assert document["occurred_at"].endswith("Z")


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_event_json_schema_is_generated(event: Event) -> None:
    schema = type(event).model_json_schema()
    assert "event_type" in schema["required"] or "event_type" in schema["properties"]
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("record", RECORDS, ids=_id)
def test_record_json_round_trip(record) -> None:
    assert type(record).model_validate_json(record.model_dump_json()) == record


@pytest.mark.parametrize("record", RECORDS, ids=_id)
def test_record_bson_round_trip_is_lossless(record) -> None:
    document = record.to_document()
    # What pymongo gives back: the real BSON codec, naive UTC datetimes, an _id.
    stored = bson.decode(bson.encode({"_id": bson.ObjectId(), **document}))
    restored = type(record).from_document(stored)
    assert restored == record
    for name in type(record).model_fields:
        value = getattr(restored, name)
        if isinstance(value, datetime):
            assert value.tzinfo is not None and value.utcoffset() == timedelta(0), name


def test_document_keeps_datetimes_and_plain_values() -> None:
    record = next(r for r in RECORDS if isinstance(r, ImageRecord) and r.state is ImageState.LR)
    document = record.to_document()
    assert isinstance(document["acquired_at"], datetime)
    assert document["state"] == 0 and type(document["state"]) is int
    assert document["tier"] == "recent" and type(document["tier"]) is str
    assert document["object"] == {"bucket": record.object.bucket, "key": record.object.key}
    assert record.natural_key() == {"exam_id": EXAM_ID, "slide_number": 1, "state": 0}


def test_birth_date_survives_mongodb_as_a_date() -> None:
    record = PatientRecord(patient_id=PATIENT_ID, identity=IDENTITY)
    stored = bson.decode(bson.encode(record.to_document()))
    assert isinstance(stored["identity"]["birth_date"], datetime)
    assert PatientRecord.from_document(stored).identity.birth_date == date(1979, 4, 12)


def test_catalog_datetimes_are_truncated_to_mongodb_milliseconds() -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    record = PatientRecord(patient_id="P1", admitted_at=at)
    assert record.admitted_at == datetime(2024, 1, 2, 1, 4, 5, 678000, tzinfo=UTC)


# --- enums and ids --------------------------------------------------------------------------


def test_image_state_values_follow_the_spec() -> None:
    assert ImageState.LR == 0 and ImageState.HR == 1


def test_storage_tiers_name_a_configured_bucket() -> None:
    configured = Settings().storage.tiers()
    for tier in StorageTier:
        assert tier.settings_name in configured
    assert not StorageTier.TEMPORARY.permanent and StorageTier.LONG.permanent


@pytest.mark.parametrize("value", ["19800101-1234", "P1", "a.b_c-d", "9" * 64])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)
    event = parse_event(Topic.SLIDE_SCANNED, json.dumps(_scanned(patient_id=value, exam_id=value)).encode())
    assert event.patient_id == value and event.exam_id == value


@pytest.mark.parametrize(
    "value", ["", " P1", "P 1", "P1\n", "../P1", "P1/2", "P1\\2", ".hidden", "-rf", "Ä1", "9" * 65]
)
def test_invalid_patient_ids_are_rejected_by_name(value: str) -> None:
    assert not is_valid_id(value)
    error = _reason(Topic.SLIDE_SCANNED, _scanned(patient_id=value))
    assert error.fields == ("patient_id",)
    assert "patient_id" in error.reason


@pytest.mark.parametrize("number", [0, 10000, -1])
def test_slide_number_range(number: int) -> None:
    error = _reason(Topic.SLIDE_SCANNED, _scanned(slide_number=number))
    assert error.fields == ("slide_number",)


# --- object keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "E1/1/lr.tif", "E1/1/x4/", "x..y/z", ".../a"])
def test_object_keys_accepted(key: str) -> None:
    assert ObjectRef(bucket="slidestream-recent", key=key).key == key


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "a/../b", "a/..", "a/./b", "a//b", "a\\b", "a\x00b", "a\nb", "x" * 1025]
)
def test_object_keys_that_could_escape_are_rejected(key: str) -> None:
    with pytest.raises(ValidationError) as info:
        ObjectRef(bucket="slidestream-recent", key=key)
    assert info.value.errors()[0]["loc"] == ("key",)


@pytest.mark.parametrize("bucket", ["", "ab", "Upper", "-x-bucket", "bucket-", "a" * 64, "a_b"])
def test_bad_bucket_names_are_rejected(bucket: str) -> None:
    with pytest.raises(ValidationError):
        ObjectRef(bucket=bucket, key="k")


# --- strictness -------------------------------------------------------------------------------


def test_events_are_frozen() -> None:
    event = EVENTS[0]
    with pytest.raises(ValidationError):
        event.exam_id = "other"  # type: ignore[attr-defined]  # deliberately writing a frozen event


def test_plain_enum_values_are_accepted_from_python_but_not_lookalikes() -> None:
    stored = next(e for e in EVENTS if isinstance(e, SlideStored))
    fields = stored.model_dump(exclude={"event_id", "occurred_at", "event_type"})
    assert SlideStored(**{**fields, "state": 1, "tier": "long"}).state is ImageState.HR
    for bad in ({"state": True}, {"state": "1"}, {"state": 2}, {"tier": "RECENT"}, {"tier": 0}):
        with pytest.raises(ValidationError) as info:
            SlideStored(**{**fields, **bad})
        assert info.value.errors()[0]["loc"][0] in bad


def test_numeric_strings_are_not_numbers() -> None:
    error = _reason(Topic.SLIDE_SCANNED, _scanned(slide_number="3", size_bytes="10"))
    assert set(error.fields) == {"slide_number", "size_bytes"}


def test_naive_datetimes_are_rejected() -> None:
    error = _reason(Topic.SLIDE_SCANNED, _scanned(acquired_at="2024-05-06T07:08:09"))
    assert error.fields == ("acquired_at",)
    assert "timezone" in error.reason
    with pytest.raises(ValidationError):
        PatientAdmitted(patient_id="P1", admitted_at=datetime(2024, 1, 1))


def test_offset_datetimes_are_normalised_to_utc() -> None:
    event = parse_event(Topic.SLIDE_SCANNED, json.dumps(_scanned(acquired_at="2024-05-06T09:08:09+02:00")).encode())
    assert event.acquired_at == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert event.acquired_at.tzinfo is UTC


def test_unknown_fields_are_rejected_by_name_if_a_field_name_else_without_the_key() -> None:
    error = _reason(Topic.SLIDE_SCANNED, _scanned(patient_name="x"))
    assert error.fields == ("patient_name",)  # an identity field's name, not its value
    error = _reason(Topic.PATIENT_ADMITTED, {"event_type": "patient.admitted", "patient_id": "P-1",
                                             "admitted_at": "2026-01-01T00:00:00Z", "Jane Roe-Smith": 1,
                                             "identity": {"name": "x", "Jane Roe-Smith": 2}})
    assert sorted(error.fields) == ["(unexpected key)", "identity.(unexpected key)"]
    assert "Jane" not in str(error)


def _any_reason(document: dict) -> EventValidationError:
    with pytest.raises(EventValidationError) as info:
        parse_any_event(json.dumps(document))
    return info.value


def test_rejection_reasons_never_quote_a_tag_or_event_type_from_the_input() -> None:
    for error in (_reason(Topic.PATIENT_ADMITTED, {"event_type": "Jane Roe-Smith"}),
                  _any_reason({"event_type": "Jane Roe-Smith"})):
        assert "Jane" not in str(error) and "event_type" in str(error)


def test_other_schema_versions_are_rejected() -> None:
    error = _reason(Topic.SLIDE_SCANNED, _scanned(schema_version=2))
    assert error.fields == ("schema_version",)


def test_event_of_the_wrong_topic_is_rejected() -> None:
    error = _reason(Topic.SLIDE_STORED, _scanned())
    assert error.fields == ("event_type",)
    assert "slide.stored" in error.reason and "slide.scanned" in error.reason


def test_unknown_topic() -> None:
    with pytest.raises(EventValidationError, match="unknown topic"):
        parse_event("no.such.topic", b"{}")


# --- upscale requests -------------------------------------------------------------------------


def _request(**changes: object) -> UpscaleRequested:
    fields = {"exam_id": "E1", "slide_number": 1, "scale": 4, "priority": "interactive"}
    return UpscaleRequested(**{**fields, **changes})


def test_upscale_request_takes_tiles_or_region() -> None:
    assert _request(tiles=[TileRef(level=1, col=0, row=0)]).priority is Priority.INTERACTIVE
    assert _request(region=Region(x=0, y=0, width=1, height=1)).tiles is None
    for bad in ({}, {"tiles": []}, {"tiles": [TileRef(level=1, col=0, row=0)],
                                    "region": Region(x=0, y=0, width=1, height=1)}):
        with pytest.raises(ValidationError):
            _request(**bad)


@pytest.mark.parametrize("scale", [1, 3, 16])
def test_upscale_scale_must_be_2_4_or_8(scale: int) -> None:
    with pytest.raises(ValidationError):
        _request(scale=scale, tiles=[TileRef(level=1, col=0, row=0)])


def test_region_and_tile_bounds() -> None:
    for bad in ({"x": -1}, {"width": 0}, {"height": -5}):
        with pytest.raises(ValidationError):
            Region(**{"x": 0, "y": 0, "width": 1, "height": 1, **bad})
    with pytest.raises(ValidationError):
        TileRef(level=-1, col=0, row=0)


def test_kafka_key_is_the_exam_then_the_patient() -> None:
    keys = {type(e).__name__: e.kafka_key() for e in EVENTS}
    assert keys["SlideScanned"] == EXAM_ID
    assert keys["PatientDischarged"] == PATIENT_ID
    assert keys["UpscaleRequested"] == EXAM_ID
    letters = [e for e in EVENTS if isinstance(e, DeadLetter)]
    assert letters and all(e.kafka_key() == str(e.event_id) for e in letters)  # never the original key


# --- garbage in -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"null", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"{}", "event_type"),
        (b"x" * (2 << 20), "exceeds"),
    ],
)
def test_garbage_gives_a_readable_error(raw: bytes, words: str) -> None:
    with pytest.raises(EventValidationError) as info:
        parse_event(Topic.SLIDE_SCANNED, raw)
    assert words in info.value.reason
    assert str(info.value).startswith("invalid slide.scanned event: ")


def test_missing_value_gives_a_readable_error() -> None:
    with pytest.raises(EventValidationError, match="empty message"):
        parse_event(Topic.SLIDE_SCANNED, None)


def test_errors_do_not_echo_identity_values() -> None:
    admitted = json.loads(next(e for e in EVENTS if isinstance(e, PatientAdmitted)).model_dump_json())
    admitted["identity"]["name"] = ["Margarethe", "Example-Lindqvist"]  # wrong type
    admitted["identity"]["birth_date"] = "12/04/1979"  # wrong format
    admitted["patient_id"] = "19790412 7731"  # whitespace: invalid
    error = _reason(Topic.PATIENT_ADMITTED, admitted)
    assert set(error.fields) == {"identity.name", "identity.birth_date", "patient_id"}
    for secret in ("Margarethe", "Lindqvist", "12/04/1979", "7731"):
        assert secret not in str(error)
    with pytest.raises(ValidationError) as info:
        PatientIdentity(name=42)  # type: ignore[arg-type]  # deliberately wrong type
    assert "42" not in str(info.value)


def test_many_errors_are_summarised() -> None:
    error = _reason(Topic.UPSCALE_REQUESTED, {"event_type": "upscale.requested",
                                             **{f"extra_{i}": i for i in range(40)}})
    assert "more errors" in error.reason
    assert len(error.fields) == 20


# --- dead letters -----------------------------------------------------------------------------


def _letter(raw: bytes | None, **kwargs) -> DeadLetter:
    from core.dead_letters import dead_letter

    args = {"source_topic": "slide.scanned", "partition": 1, "offset": 2, "error": "bad", "salt": b"s" * 32}
    return dead_letter(raw, **(args | kwargs))


@pytest.mark.parametrize("raw", [b'{"broken": ', b"\x00\xff\xfe binary", b"", "\u017c\u00f3\u0142w".encode(), None])
def test_a_dead_letter_of_a_non_json_payload_keeps_only_its_size_and_keyed_digest(raw: bytes | None) -> None:
    from core.logging import keyed_digest, patient_ref

    letter = _letter(raw, key=b"\xffk")
    again = parse_event(Topic.DEAD_LETTER, letter.to_json_bytes())
    assert isinstance(again, DeadLetter) and again == letter
    assert again.redacted is None and again.payload_size == len(raw or b"")
    assert again.payload_digest == keyed_digest(raw or b"", b"s" * 32) != keyed_digest(raw or b"", b"t" * 32)
    assert again.key_ref == patient_ref("\\xffk", b"s" * 32) and len(again.key_ref) == 16
    if raw:
        assert raw not in letter.to_json_bytes()


def test_a_dead_letter_of_json_keeps_a_redacted_copy() -> None:
    from core.logging import REDACTED, patient_ref

    raw = json.dumps({"event_type": "slide.scanned", "exam_id": "E1", "slide_number": 3, "patient_id": "P-77123",
                      "original_filename": "P-77123_left.svs", "scanner_id": "scan P-77123 ok",
                      "ingest": {"bucket": "b", "key": "k", "Jane Doe": 1}, "name": "Jane Doe"}).encode()
    letter = _letter(raw, key="P-77123")
    copy = letter.redacted
    assert isinstance(copy, dict)
    assert copy["exam_id"] == "E1" and copy["slide_number"] == 3 and copy["event_type"] == "slide.scanned"
    assert copy["patient_ref"] == patient_ref("P-77123", b"s" * 32) == letter.key_ref
    assert copy["name"] == REDACTED and copy["original_filename"] == REDACTED
    assert copy["scanner_id"] == f"scan {REDACTED} ok"
    assert copy["ingest"] == {"bucket": "b", "key": "k", "[unknown field 3]": REDACTED}  # keys are input too
    text = letter.to_json_bytes()
    assert b"P-77123" not in text and b"Jane Doe" not in text
    assert letter.kafka_key() == str(letter.event_id)


@pytest.mark.parametrize("raw", [b"[" * 100_000, b"[" * 500 + b"]" * 500, b'{"a": ' + b"1" * 5000 + b"}",
                                 b'{"ward": "' + b"x" * (2 << 20) + b'"}'],
                         ids=["nested-100k-unclosed", "nested-500", "huge-int", "over-1MiB"])
def test_hostile_payloads_become_dead_letters_with_size_and_digest(raw: bytes) -> None:
    letter = _letter(raw)
    assert letter.redacted is None and letter.payload_size == len(raw)
    assert len(letter.to_json_bytes()) < 4096
    assert parse_event(Topic.DEAD_LETTER, letter.to_json_bytes()) == letter


def test_dead_letter_accepts_any_length_of_reason() -> None:
    letter = _letter(b"{}", error="e" * 10_000)
    assert len(letter.error) == 4096 and letter.error.endswith("...")


# --- catalog records --------------------------------------------------------------------------


def test_audit_entries_refuse_identity_fields() -> None:
    for field in ("target", "detail"):
        with pytest.raises(ValidationError) as info:
            AuditEntry(actor="viewer", action="retrieve", outcome="ok", **{field: {"national_id": "x"}})
        assert "identity" in str(info.value) and "national_id" in str(info.value)


def test_image_record_defaults_and_limits() -> None:
    record = ImageRecord(exam_id="E1", patient_id="P1", slide_number=1, state=0, tier="recent",
                         object=ObjectRef(bucket="slidestream-recent", key="E1/1.tif"),
                         acquired_at=datetime.now(UTC))
    assert record.access_count == 0 and record.pending_move is None
    with pytest.raises(ValidationError):
        ImageRecord(**{**record.model_dump(), "access_count": -1})


@pytest.mark.parametrize("payload", ["[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_deeply_nested_json_is_refused_as_bad_input_not_a_crash(payload: str) -> None:
    with pytest.raises(EventValidationError, match="nested too deeply"):
        parse_event(Topic.SLIDE_SCANNED, payload)


def test_a_reason_that_quotes_an_identity_value_of_the_payload_is_scrubbed_too() -> None:
    raw = json.dumps({"patient_id": "P-55501", "identity": {"national_id": "780101-4455"}}).encode()
    letter = _letter(raw, error="service said: unknown national id 780101-4455 for P-55501")
    assert letter.error == "service said: unknown national id [redacted] for [redacted]"
