"""Identifiers from outside are checked against the schema types; errors name fields, not values."""

from __future__ import annotations

import pytest

from scanner.ids import InvalidIds, validate_ids
from scanner.ingest import key_name
from schemas.common import ObjectRef
from schemas.layout import ingest_key


def test_valid_ids_are_accepted_and_slide_text_becomes_a_number() -> None:
    ids = validate_ids("P-000123", "EX.2024_17", "3", scanner_id="aperio-1", body_part="colon")
    assert (ids.patient_id, ids.exam_id, ids.slide_number) == ("P-000123", "EX.2024_17", 3)
    assert (ids.scanner_id, ids.body_part) == ("aperio-1", "colon")
    assert validate_ids("P1", "E1", 9999).slide_number == 9999


@pytest.mark.parametrize(
    ("patient", "exam", "slide", "bad_fields"),
    [
        ("", "E1", 1, ["patient_id"]),
        (None, None, None, ["patient_id", "exam_id", "slide_number"]),
        ("../etc", "E1", 1, ["patient_id"]),
        ("P1", "-rf", 1, ["exam_id"]),
        ("P1", "E 1", 1, ["exam_id"]),
        ("P1", "E1\n", 1, ["exam_id"]),
        ("P1", "x" * 65, 1, ["exam_id"]),
        ("P1", "E1", 0, ["slide_number"]),
        ("P1", "E1", "10000", ["slide_number"]),
        ("P1", "E1", "3.0", ["slide_number"]),
        ("P1", "E1", "+3", ["slide_number"]),
        ("P1", "E1", True, ["slide_number"]),
        ("P1", "E1", 2.0, ["slide_number"]),
        ("P1+X", "E/1", -1, ["patient_id", "exam_id", "slide_number"]),
    ],
)
def test_malformed_ids_are_refused_naming_every_bad_field(patient, exam, slide, bad_fields) -> None:
    with pytest.raises(InvalidIds) as info:
        validate_ids(patient, exam, slide)
    assert [problem.split(":")[0] for problem in info.value.problems] == bad_fields


def test_error_message_never_echoes_the_value() -> None:
    secret = "1985 12 24 SMITH"  # looks like identity data, and is malformed (spaces)
    with pytest.raises(InvalidIds) as info:
        validate_ids(secret, "E1", 1, scanner_id="scanner one")
    assert secret not in str(info.value) and "SMITH" not in str(info.value)
    assert "patient_id: malformed" in str(info.value) and "scanner_id: malformed" in str(info.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CMU-1.svs", "scan.svs"),
        ("P-000123+EX1+3.SVS", "scan.svs"),  # the patient ID in the name stays out of the key
        ("slide one (copy).ome.tiff", "scan.ome.tiff"),
        ("../../etc/passwd", "scan"),
        ("..\\windows\\x.ndpi", "scan.ndpi"),
        (".hidden", "scan"),
        ("weird.t?f", "scan.tf"),
        ("x." + "a" * 40, "scan." + "a" * 15),
    ],
)
def test_ingest_keys_name_exam_and_slide_but_not_the_file(name, expected) -> None:
    assert key_name(name) == expected
    key = ingest_key("E1", 1, key_name(name))
    assert key == f"scans/E1/0001/{expected}"
    ObjectRef(bucket="slidestream-ingest", key=key)  # accepted by the schema
