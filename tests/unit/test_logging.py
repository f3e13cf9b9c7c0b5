"""Real log output (JSON lines) must never carry patient identity data or raw patient IDs."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

import pytest
import structlog

from core.logging import REDACTED, configure_logging, log_salt, patient_ref
from core.settings import Settings
from schemas.common import IDENTITY_FIELDS, PatientIdentity
from schemas.examples import EXAM_ID, IDENTITY, PATIENT_ID, example_events, example_records

IDENTITY_VALUES = [
    IDENTITY.name, IDENTITY.given_name, IDENTITY.family_name, IDENTITY.national_id,
    IDENTITY.address, IDENTITY.phone, IDENTITY.birth_date.isoformat(),
]
SECRETS = [PATIENT_ID, *IDENTITY_VALUES]


def _lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def _assert_clean(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"identity data in logs: {leaked}"


def test_events_and_records_with_identity_are_logged_without_it(capture: io.StringIO) -> None:
    log = structlog.get_logger("slidestream.test")
    for event in example_events():
        log.info("event.received", topic=event.topic.value, payload=event)
    for record in example_records():
        log.info("catalog.write", record=record, document=record.to_document())
    log.info("his.admit", patient_id=PATIENT_ID, identity=IDENTITY, **IDENTITY.model_dump(mode="json"))
    log.info("batch", patients=[{"patient_id": PATIENT_ID, "name": IDENTITY.name}], patient_ids=[PATIENT_ID])

    text = capture.getvalue()
    _assert_clean(text)
    lines = _lines(capture)
    assert len(lines) == len(example_events()) + len(example_records()) + 2

    ref = patient_ref(PATIENT_ID, log_salt(Settings()))
    admitted = next(line for line in lines if line.get("topic") == "patient.admitted")
    assert admitted["payload"]["patient_ref"] == ref
    assert admitted["payload"]["identity"] == REDACTED
    assert admitted["payload"]["visit_id"] == "V-88"  # non-identity data is kept
    scanned = next(line for line in lines if line.get("topic") == "slide.scanned")
    assert scanned["payload"]["exam_id"] == EXAM_ID and scanned["payload"]["ingest"]["key"].startswith(EXAM_ID)
    his = next(line for line in lines if line["event"] == "his.admit")
    assert his["patient_ref"] == ref and "patient_id" not in his
    assert all(his[field] == REDACTED for field in ("identity", "name", "national_id", "birth_date"))
    batch = next(line for line in lines if line["event"] == "batch")
    assert batch["patient_refs"] == [ref] and batch["patients"] == [{"patient_ref": ref, "name": REDACTED}]


def test_clinical_free_text_is_redacted(capture: io.StringIO) -> None:
    structlog.get_logger().info("report.saved", findings="glandular structures", diagnosis="adenocarcinoma",
                                clinical_info="suspected adenocarcinoma")
    line = _lines(capture)[0]
    assert line["findings"] == line["diagnosis"] == line["clinical_info"] == REDACTED
    assert "adenocarcinoma" not in capture.getvalue()


def test_ids_in_other_strings_and_tracebacks_are_scrubbed(capture: io.StringIO) -> None:
    log = structlog.get_logger()
    try:
        raise LookupError(f"no catalog row for patient {PATIENT_ID} ({IDENTITY.name})")
    except LookupError:
        log.exception("retrieve.failed", patient_id=PATIENT_ID, identity=IDENTITY,
                      key=f"{PATIENT_ID}/exam/1.tif")
    _assert_clean(capture.getvalue())
    line = _lines(capture)[0]
    assert "LookupError" in line["exception"] and REDACTED in line["exception"]
    assert line["key"] == f"{REDACTED}/exam/1.tif"


def test_stdlib_loggers_go_through_the_same_redaction(capture: io.StringIO) -> None:
    logging.getLogger("aiokafka.consumer").warning(
        "rebalance for %s", "group-1", extra={"patient_id": PATIENT_ID, "national_id": IDENTITY.national_id}
    )
    _assert_clean(capture.getvalue())
    line = _lines(capture)[0]
    assert line["event"] == "rebalance for group-1"
    assert line["logger"] == "aiokafka.consumer" and line["level"] == "warning"
    assert line["national_id"] == REDACTED and len(line["patient_ref"]) == 16


def test_lines_carry_an_iso_utc_timestamp_and_level(capture: io.StringIO) -> None:
    structlog.get_logger("x").debug("tick", n=1)
    line = _lines(capture)[0]
    stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    assert line["level"] == "debug" and line["n"] == 1


def test_log_level_comes_from_settings(capture: io.StringIO) -> None:
    configure_logging(Settings(log_level="warning"), stream=capture)
    structlog.get_logger().info("hidden")
    logging.getLogger("faust").info("hidden too")
    structlog.get_logger().warning("shown")
    assert [line["event"] for line in _lines(capture)] == ["shown"]


def test_reconfiguring_replaces_the_handler(capture: io.StringIO) -> None:
    configure_logging(Settings(log_level="info"), stream=capture)
    configure_logging(Settings(log_level="info"), stream=capture)
    structlog.get_logger().info("once")
    assert len(_lines(capture)) == 1
    assert len(logging.getLogger().handlers) == 1


def test_console_format_is_redacted_too(capture: io.StringIO) -> None:
    configure_logging(Settings(log_format="console"), stream=capture)
    structlog.get_logger().info("admit", patient_id=PATIENT_ID, identity=IDENTITY)
    text = capture.getvalue()
    _assert_clean(text)
    assert "admit" in text and "patient_ref" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_patient_ref_is_stable_short_and_keyed(capture: io.StringIO) -> None:
    salt = b"hospital-a"
    ref = patient_ref(PATIENT_ID, salt)
    assert ref == patient_ref(PATIENT_ID, salt)
    assert len(ref) == 16 and int(ref, 16) >= 0  # 64 bits: not reversible by hashing every short ID
    assert ref != patient_ref(PATIENT_ID, b"hospital-b")
    assert ref != patient_ref(PATIENT_ID + "0", salt)


def test_salt_comes_from_settings(capture: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIDESTREAM_LOG_SALT", "site-secret-0123456789")
    configure_logging(Settings(), stream=capture)
    structlog.get_logger().info("x", patient_id=PATIENT_ID)
    assert _lines(capture)[0]["patient_ref"] == patient_ref(PATIENT_ID, b"site-secret-0123456789")


def test_identity_fields_cover_every_identity_attribute() -> None:
    assert set(PatientIdentity.model_fields) <= set(IDENTITY_FIELDS)
    assert "identity" in IDENTITY_FIELDS


def test_without_a_configured_salt_each_install_makes_its_own(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIDESTREAM_LOG_SALT", raising=False)
    one = log_salt(Settings(state_dir=tmp_path / "a"))
    assert one == log_salt(Settings(state_dir=tmp_path / "a"))  # every process of the install agrees
    assert one != log_salt(Settings(state_dir=tmp_path / "b")) and len(one) >= 32
    key = tmp_path / "a" / "secrets" / "log-salt.key"
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    assert patient_ref(PATIENT_ID, one) != patient_ref(PATIENT_ID, b"slidestream-log-salt")


@pytest.mark.parametrize("salt", ["slidestream-log-salt", "tiny-salt"])
def test_the_old_public_salt_and_short_salts_are_refused_at_start(salt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("SLIDESTREAM_LOG_SALT", salt)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "log_salt" in str(info.value) and salt not in str(info.value)


def test_file_names_are_redacted_from_our_own_lines(capture: io.StringIO) -> None:
    """Failed before: a logged slide.scanned carried its original file name, which the
    watch-folder convention builds from the patient ID."""
    scanned = next(e for e in example_events() if e.event_type == "slide.scanned")
    structlog.get_logger("x").info("event.received", payload=scanned, filename="P-31337+E1+1.svs")
    line = _lines(capture)[0]
    assert line["payload"]["original_filename"] == REDACTED and line["filename"] == REDACTED
    assert scanned.original_filename not in capture.getvalue() and "P-31337" not in capture.getvalue()
