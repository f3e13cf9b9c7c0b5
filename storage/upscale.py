"""Asking the compute service for HR tiles and awaiting its answer (contract:
docs/upscale-contract.md).

A request is an ``upscale.requested`` event sent to a partition of its priority class; the
answer is the ``upscale.done`` (or ``upscale.failed``) event with the same ``request_id``.
``KafkaUpscaleGateway`` keeps one producer and one consumer tailing both answer topics
(no consumer group: every waiting process sees every answer) and hands each answer to the
caller waiting for that request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from typing import Protocol
from uuid import UUID

import structlog

from schemas.events import UpscaleDone, UpscaleFailed, UpscaleRequested
from schemas.registry import EventValidationError, parse_event
from schemas.topics import Priority, Topic, priority_partitions
from storage.quiet import topic_partitions

log = structlog.get_logger(__name__)

Answer = UpscaleDone | UpscaleFailed


def partition_for(priority: Priority, exam_id: str, slide_number: int) -> int:
    """A partition of ``priority``'s class, fixed per slide so one slide's requests stay in
    order on one partition while different slides spread over the class's partitions."""
    partitions = priority_partitions(priority)
    return partitions[zlib.crc32(f"{exam_id}/{slide_number}".encode()) % len(partitions)]


def merge_answers(parts: list[Answer]) -> Answer:
    """One answer for a request answered in several tile batches: the first failure if any
    batch failed, else every batch's tiles in one ``UpscaleDone`` (timings added up)."""
    failed = [part for part in parts if isinstance(part, UpscaleFailed)]
    if failed:
        return failed[0].model_copy(update={"remaining": 0})
    timings: dict[str, float] = {}
    for part in parts:
        for name, ms in part.timings_ms.items():
            timings[name] = timings.get(name, 0.0) + ms
    results = [result for part in parts for result in part.results]
    return parts[-1].model_copy(update={"results": results, "timings_ms": timings, "remaining": 0})


class UpscaleGateway(Protocol):
    async def request(self, event: UpscaleRequested, timeout_s: float) -> Answer | None:
        """Send ``event``; its answer, or None if none came within ``timeout_s``."""
        ...


class KafkaUpscaleGateway:
    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._producer = None
        self._consumer = None
        self._reader: asyncio.Task | None = None
        self._waiting: dict[UUID, asyncio.Future[Answer]] = {}
        # Answers come per tile batch (``remaining`` counts down to 0); partial ones wait here.
        self._partial: dict[UUID, list[Answer]] = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await self._producer.start()
        # A short fetch wait: a viewer is waiting, and aiokafka's 500 ms default long poll would
        # put a floor under every round trip after the first.
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                          fetch_max_wait_ms=20)
        await self._consumer.start()
        tps = [TopicPartition(topic.value, p)
               for topic in (Topic.UPSCALE_DONE, Topic.UPSCALE_FAILED)
               for p in await topic_partitions(self._consumer, topic.value)]
        if not tps:
            raise RuntimeError("topics upscale.done / upscale.failed do not exist; bootstrap the stack")
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # settle the positions now: answers to requests sent after start() are seen
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read_answers(), name="upscale-answers")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def __aenter__(self) -> "KafkaUpscaleGateway":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _read_answers(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            try:
                answer = parse_event(record.topic, record.value)
            except EventValidationError:
                continue  # the agents dead-letter bad answers; a waiter only wants its own
            future = self._waiting.get(answer.request_id)  # type: ignore[attr-defined]
            if future is None or future.done():
                continue
            parts = self._partial.setdefault(answer.request_id, [])  # type: ignore[attr-defined]
            parts.append(answer)  # type: ignore[arg-type]
            if answer.remaining == 0:  # type: ignore[attr-defined]
                future.set_result(merge_answers(parts))

    async def request(self, event: UpscaleRequested, timeout_s: float) -> Answer | None:
        if self._producer is None:
            raise RuntimeError("gateway not started")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[event.request_id] = future
        try:
            partition = partition_for(event.priority, event.exam_id, event.slide_number)
            await self._producer.send_and_wait(Topic.UPSCALE_REQUESTED.value, event.to_json_bytes(),
                                               key=event.exam_id.encode(), partition=partition)
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except asyncio.TimeoutError:
            log.info("upscale.timeout", exam_id=event.exam_id, slide=event.slide_number,
                     request_id=str(event.request_id), timeout_s=timeout_s)
            return None
        finally:
            self._waiting.pop(event.request_id, None)
            self._partial.pop(event.request_id, None)
