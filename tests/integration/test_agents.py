"""The Faust worker on the real broker: it answers, dead-letters bad events and keeps going."""

from __future__ import annotations

import json

import pytest

from core.kafka import producer, tail_from_end, wait_for
from core.settings import Settings
from schemas.events import DeadLetter
from schemas.topics import PROBE_TOPIC, Topic
from slidestream.probe import probe_agents

pytestmark = pytest.mark.integration


async def _send_raw(settings: Settings, topic: str, value: bytes) -> None:
    async with producer(settings) as prod:
        await prod.send_and_wait(topic, value, key=b"test")


def _dead_letter_with(payload: bytes):
    def match(raw: bytes) -> DeadLetter | None:
        letter = DeadLetter.model_validate_json(raw)
        return letter if letter.raw_payload() == payload else None

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
        letter = await wait_for(letters, _dead_letter_with(payload), timeout=30)
    assert letter.source_topic == PROBE_TOPIC
    assert letter.offset >= 0
    assert letter.error  # a readable reason
    # The same worker still serves the next event.
    assert (await probe_agents(agent_worker, timeout=30)).worker
