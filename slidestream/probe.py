"""Round trip through the agents: publish a probe, wait for a worker's reply."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.kafka import producer, send_event, tail_from_end, wait_for
from core.settings import Settings
from schemas.probe import Probe, ProbeReply
from schemas.topics import PROBE_REPLY_TOPIC, PROBE_TOPIC


@dataclass(frozen=True)
class ProbeResult:
    worker: str
    round_trip_ms: float


async def _one(prod: AIOKafkaProducer, replies: AIOKafkaConsumer, timeout: float) -> ProbeResult:
    probe = Probe()
    start = time.perf_counter()
    await send_event(prod, PROBE_TOPIC, probe, key=str(probe.probe_id))

    def match(raw: bytes) -> ProbeReply | None:
        reply = ProbeReply.model_validate_json(raw)
        return reply if reply.probe_id == probe.probe_id else None

    reply = await wait_for(replies, match, timeout)
    return ProbeResult(worker=reply.worker, round_trip_ms=(time.perf_counter() - start) * 1000)


async def probe_agents(settings: Settings, timeout: float = 30.0) -> ProbeResult:
    async with tail_from_end(settings, PROBE_REPLY_TOPIC) as replies, producer(settings) as prod:
        return await _one(prod, replies, timeout)


async def probe_many(settings: Settings, count: int, timeout: float = 30.0) -> list[ProbeResult]:
    """``count`` sequential round trips over one producer and one consumer (for the bench)."""
    async with tail_from_end(settings, PROBE_REPLY_TOPIC) as replies, producer(settings) as prod:
        return [await _one(prod, replies, timeout) for _ in range(count)]
