"""Property tests: every malformed event is rejected with an error naming the field, and
valid events survive JSON (and catalog records BSON) unchanged."""

from __future__ import annotations

import json
import posixpath
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.catalog import ImageRecord
from schemas.common import ObjectRef
from schemas.events import SlideScanned
from schemas.examples import example_events
from schemas.ids import ID_PATTERN, is_valid_id
from schemas.registry import EVENT_MODELS, UNEXPECTED_KEY, EventValidationError, field_names, parse_event
from schemas.topics import Topic

# Per test, not a global profile: other modules' hypothesis settings stay untouched.
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DOCUMENTS: list[tuple[Topic, dict[str, Any]]] = [(e.topic, json.loads(e.to_json_bytes())) for e in example_events()]
ID_FIELDS = ("patient_id", "exam_id", "visit_id", "terminal_id", "scanner_id", "requested_by")

# Values of the wrong JSON type for a value of each JSON type.
WRONG_FOR: dict[type, list[Any]] = {
    str: [123, 1.5, True, [], {}],
    int: ["7", 1.5, True, [], {}],
    float: ["1.5", True, [], {}],
    bool: [1, 0, "true", None, [], {}],
    dict: ["x", 1, []],
    list: ["x", 1, {}],
    type(None): [True, [], {}],
}

documents = st.sampled_from(DOCUMENTS)


def _leaves_and_nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON document (dict keys and list indexes), root excluded."""
    paths = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _leaves_and_nodes(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _leaves_and_nodes(item, path + (index,))
    return paths


def _get(document: Any, path: tuple) -> Any:
    for part in path:
        document = document[part]
    return document


def _set(document: Any, path: tuple, value: Any) -> None:
    _get(document, path[:-1])[path[-1]] = value


def _copy(document: dict) -> dict:
    return json.loads(json.dumps(document))


def _rejected(topic: Topic, document: Any) -> EventValidationError:
    with pytest.raises(EventValidationError) as info:
        parse_event(topic, json.dumps(document).encode())
    return info.value


def _names(error: EventValidationError, dotted: str) -> bool:
    named = any(field == dotted or field.startswith(dotted + ".") for field in error.fields)
    return named and dotted in error.reason


@PROPERTY
@given(documents, st.data())
def test_any_value_of_the_wrong_type_is_rejected_by_its_path(sample, data) -> None:
    topic, document = sample
    # A dead letter's redacted copy is any JSON: no value there is of the wrong type.
    path = data.draw(st.sampled_from([p for p in _leaves_and_nodes(document) if p[0] != "redacted"]))
    original = _get(document, path)
    wrong = data.draw(st.sampled_from(WRONG_FOR[type(original)]))
    # Dict keys of free-form maps (timings_ms) are not typed, so only their values are.
    mutated = _copy(document)
    _set(mutated, path, wrong)
    error = _rejected(topic, mutated)
    # A free-form map's keys (timings_ms) are the sender's text: named as "(unexpected key)".
    dotted = ".".join(str(part) if isinstance(part, int) or part in field_names() else UNEXPECTED_KEY
                      for part in path)
    assert _names(error, dotted), (dotted, error.reason)


@PROPERTY
@given(documents, st.data())
def test_a_missing_required_field_is_named(sample, data) -> None:
    topic, document = sample
    required = [name for name, field in EVENT_MODELS[topic].model_fields.items() if field.is_required()]
    field = data.draw(st.sampled_from(required))
    mutated = _copy(document)
    del mutated[field]
    error = _rejected(topic, mutated)
    assert field in error.fields and f"{field}: Field required" in error.reason


@PROPERTY
@given(documents, st.text(min_size=1, max_size=30), st.integers() | st.text() | st.none())
def test_an_unknown_field_is_reported_without_repeating_its_name(sample, name, value) -> None:
    # The key is the sender's text (a patient's name has been seen there): never echoed.
    topic, document = sample
    assume(name not in document and name not in field_names())
    error = _rejected(topic, {**document, name: value})
    assert error.fields == (UNEXPECTED_KEY,)
    assert error.reason == f"{UNEXPECTED_KEY}: Extra inputs are not permitted"


@PROPERTY
@given(documents, st.data(), st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))
def test_a_naive_datetime_is_rejected_wherever_it_is(sample, data, naive) -> None:
    topic, document = sample
    datetime_paths = [p for p in _leaves_and_nodes(document)
                      if isinstance(_get(document, p), str) and _get(document, p).endswith("Z")
                      and "T" in _get(document, p)]
    path = data.draw(st.sampled_from(datetime_paths))
    mutated = _copy(document)
    _set(mutated, path, naive.isoformat())
    error = _rejected(topic, mutated)
    dotted = ".".join(map(str, path))
    assert _names(error, dotted) and "timezone" in error.reason


@PROPERTY
@given(documents, st.data(), st.one_of(st.integers(), st.floats(allow_nan=False), st.text(), st.booleans()))
def test_only_the_current_schema_version_is_read(sample, data, version) -> None:
    topic, document = sample
    current = 2 if topic is Topic.DEAD_LETTER else 1  # dead letters: v2, the redacted shape
    assume(not (type(version) is int and version == current))
    error = _rejected(topic, {**document, "schema_version": version})
    assert error.fields == ("schema_version",)


@PROPERTY
@given(documents, st.data(), st.text(max_size=80))
def test_ids_are_accepted_exactly_when_valid(sample, data, candidate) -> None:
    topic, document = sample
    fields = [f for f in ID_FIELDS if f in document and document[f] is not None]
    assume(fields)
    field = data.draw(st.sampled_from(fields))
    raw = json.dumps({**document, field: candidate}).encode()
    if is_valid_id(candidate):
        assert getattr(parse_event(topic, raw), field) == candidate
    else:
        with pytest.raises(EventValidationError) as info:
            parse_event(topic, raw)
        assert info.value.fields == (field,)


@PROPERTY
@given(st.from_regex(ID_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 64))
def test_generated_ids_are_valid(candidate) -> None:
    assert is_valid_id(candidate)


# --- object keys ------------------------------------------------------------------------------

SEGMENTS = st.sampled_from(["..", ".", "", "a", "b.c", "...", "x y", "%2e%2e", "~"])
KEYS = st.one_of(
    st.lists(SEGMENTS, min_size=1, max_size=6).map("/".join),
    st.lists(SEGMENTS, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    st.text(max_size=40),
)


@PROPERTY
@given(KEYS)
def test_accepted_object_keys_never_leave_their_bucket(key) -> None:
    try:
        ref = ObjectRef(bucket="slidestream-mirror", key=key)
    except ValidationError as exc:
        assert exc.errors()[0]["loc"] == ("key",)
        return
    root = "/export/patient"
    resolved = posixpath.normpath(posixpath.join(root, ref.key))
    assert resolved.startswith(root + "/")
    assert ".." not in PurePosixPath(ref.key).parts
    assert "\\" not in ref.key and not any(ord(c) < 32 for c in ref.key)


@PROPERTY
@given(st.lists(SEGMENTS.filter(lambda s: s not in ("", ".", "..")), min_size=1, max_size=3),
       st.sampled_from(["..", "."]), st.data())
def test_dot_segments_are_rejected_anywhere(parts, bad, data) -> None:
    position = data.draw(st.integers(0, len(parts)))
    key = "/".join(parts[:position] + [bad] + parts[position:])
    with pytest.raises(ValidationError):
        ObjectRef(bucket="slidestream-mirror", key=key)
    error = _rejected(Topic.SLIDE_SCANNED, {**DOCUMENTS[0][1], "ingest": {"bucket": "slidestream-ingest", "key": key}})
    assert error.fields == ("ingest.key",)


# --- garbage ----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@PROPERTY
@given(st.sampled_from(list(Topic)), st.binary(max_size=200))
def test_random_bytes_give_a_validation_error(topic, raw) -> None:
    with pytest.raises(EventValidationError) as info:
        parse_event(topic, raw)
    assert info.value.reason


@PROPERTY
@given(st.sampled_from(DOCUMENTS), JSON)
def test_random_json_gives_a_validation_error(sample, value) -> None:
    topic, _ = sample
    with pytest.raises(EventValidationError):
        parse_event(topic, json.dumps(value).encode())


# --- valid inputs round-trip --------------------------------------------------------------------

ids = st.from_regex(ID_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 64)
aware = st.builds(
    lambda dt, minutes: dt.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
    st.integers(-12 * 60, 14 * 60),
)
keys = st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True).filter(lambda s: s not in (".", "..")),
                min_size=1, max_size=5).map("/".join)
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@PROPERTY
@given(ids, ids, st.integers(1, 9999), keys, st.integers(1, 2**40), aware, st.none() | positive)
def test_valid_scans_round_trip(patient_id, exam_id, slide, key, size, acquired, mpp) -> None:
    event = SlideScanned(patient_id=patient_id, exam_id=exam_id, slide_number=slide,
                         ingest=ObjectRef(bucket="slidestream-ingest", key=key), original_filename="s.svs",
                         size_bytes=size, sha256="f" * 64, mpp=mpp, acquired_at=acquired)
    assert event.acquired_at == acquired and event.acquired_at.utcoffset() == timedelta(0)
    assert parse_event(Topic.SLIDE_SCANNED, event.to_json_bytes()) == event


@PROPERTY
@given(ids, ids, st.integers(1, 9999), st.sampled_from([0, 1]), st.sampled_from(["recent", "mid", "long", "temporary"]),
       keys, aware, st.integers(0, 2**31))
def test_valid_image_records_round_trip_through_bson(exam_id, patient_id, slide, state, tier, key, acquired, count) -> None:
    record = ImageRecord(exam_id=exam_id, patient_id=patient_id, slide_number=slide, state=state, tier=tier,
                         object=ObjectRef(bucket="slidestream-recent", key=key), acquired_at=acquired,
                         access_count=count)
    assert ImageRecord.from_document(bson.decode(bson.encode(record.to_document()))) == record
