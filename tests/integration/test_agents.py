"""The Faust worker on the real broker: it answers, dead-letters bad events and keeps going."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from core.kafka import Principal, producer, tail_from_end, wait_for
from core.logging import keyed_digest, log_salt, patient_ref
from core.settings import Settings
from schemas.events import DeadLetter
from schemas.topics import PROBE_TOPIC, Topic
from slidestream.probe import probe_agents

pytestmark = pytest.mark.integration


async def _send_raw(settings: Settings, topic: str, value: bytes) -> None:
    async with producer(settings) as prod:
        await prod.send_and_wait(topic, value, key=b"test")


def _dead_letter_with(settings: Settings, payload: bytes):
    """Matches the dead letter of ``payload`` by its size and keyed digest (the letter never
    holds the bytes); the worker keys the digest with the install's log salt."""
    digest = keyed_digest(payload, log_salt(settings))

    def match(raw: bytes) -> DeadLetter | None:
        letter = DeadLetter.model_validate_json(raw)
        return letter if (letter.payload_size, letter.payload_digest) == (len(payload), digest) else None

    return match


async def test_worker_answers_probe(agent_worker: Settings) -> None:
    result = await probe_agents(agent_worker, timeout=30)
    assert result.worker
    assert result.round_trip_ms > 0


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe not utf-8", b"{not json", json.dumps({"event_type": "slidestream.probe", "probe_id": 7}).encode(),
     b"[" * 100_000],
    ids=["binary", "not-json", "schema-violation", "nested-100k"],
)
async def test_bad_probe_is_dead_lettered_and_worker_keeps_running(agent_worker: Settings, payload: bytes) -> None:
    async with tail_from_end(agent_worker, Topic.DEAD_LETTER.value) as letters:
        await _send_raw(agent_worker, PROBE_TOPIC, payload)
        letter = await wait_for(letters, _dead_letter_with(agent_worker, payload), timeout=30)
    assert letter.source_topic == PROBE_TOPIC
    assert letter.offset >= 0
    assert letter.error  # a readable reason
    # The same worker still serves the next event.
    assert (await probe_agents(agent_worker, timeout=30)).worker


async def _letter_and_key(settings: Settings, topic: str, payload: bytes, key: bytes,
                          **producer_options) -> tuple[bytes, bytes | None, DeadLetter]:
    """Send ``payload`` to ``topic``; its dead letter's record (value, key) and parsed letter."""
    digest = keyed_digest(payload, log_salt(settings))
    # Patient events come only from the HIS adapter's Kafka principal (the application's is denied).
    principal: Principal = "his" if topic in (Topic.PATIENT_ADMITTED.value, Topic.PATIENT_DISCHARGED.value) else "app"
    async with tail_from_end(settings, Topic.DEAD_LETTER.value) as letters:
        async with producer(settings, principal=principal, **producer_options) as prod:
            await prod.send_and_wait(topic, payload, key=key)

        async def scan() -> tuple[bytes, bytes | None, DeadLetter]:
            async for record in letters:
                letter = DeadLetter.model_validate_json(record.value)
                if letter.source_topic == topic and letter.payload_digest == digest:
                    return record.value, record.key, letter
            raise RuntimeError("consumer stopped")

        return await asyncio.wait_for(scan(), timeout=60)


async def test_an_invalid_admission_is_dead_lettered_without_the_patients_identity(agent_worker: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    patient, name, national_id = f"P-{tag}", f"Ada {tag} Lovelace", f"NID{tag}77"
    birth_date = "1815-12-10"
    document = {
        "event_type": "patient.admitted", "event_id": str(uuid.uuid4()), "patient_id": patient,
        "admitted_at": "not a time",  # the reason it fails validation
        "identity": {"name": name, "birth_date": birth_date, "national_id": national_id},
        "national_id": national_id, "ward": f"bed of {name}",
        name: "a key that is the patient's name", f"note {birth_date}": national_id,
    }
    payload = json.dumps(document).encode()
    value, key, letter = await _letter_and_key(agent_worker, Topic.PATIENT_ADMITTED.value, payload,
                                               key=patient.encode())
    assert "admitted_at" in letter.error
    for secret in (patient, name, national_id, birth_date):
        assert secret.encode() not in value, secret  # not in the copy, the reason or anywhere else
    assert key == str(letter.event_id).encode()  # the record key is the letter's own id, never the patient's
    assert letter.key_ref == patient_ref(patient, log_salt(agent_worker))
    assert isinstance(letter.redacted, dict)
    assert letter.redacted["patient_ref"] == letter.key_ref and letter.redacted["identity"] == "[redacted]"
    assert letter.redacted["event_type"] == "patient.admitted"


@pytest.mark.parametrize(
    "payload",
    [b"[" * 100_000, b'{"x": ' * 100_000, b'{"event_type": "patient.admitted", "ward": "' + b"w" * (3 << 19) + b'"}'],
    ids=["nested-100k-list", "nested-100k-object", "over-1MiB"],
)
async def test_recursion_and_size_bombs_are_dead_lettered(agent_worker: Settings, payload: bytes) -> None:
    # A message over 1 MiB reaches Kafka compressed; the producer must be allowed to send it.
    _, _, letter = await _letter_and_key(agent_worker, Topic.PATIENT_ADMITTED.value, payload, key=b"bomb",
                                         compression_type="gzip", max_request_size=4 << 20)
    assert letter.payload_size == len(payload) and letter.redacted is None
    assert ("exceeds" in letter.error) if len(payload) > 1 << 20 else ("nested" in letter.error)
    assert (await probe_agents(agent_worker, timeout=30)).worker  # and the worker keeps serving
