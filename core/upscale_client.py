"""The one client of the compute service (contract: docs/upscale-contract.md), used by
retrieval, export, whole-slide jobs, the demo, the bench and the viewer.

A request is an ``upscale.requested`` event sent to a partition of its priority class; its
answers are ``upscale.done`` / ``upscale.failed`` events with the same ``request_id``, one per
tile batch, the last with ``remaining == 0``. ``UpscaleClient`` holds one producer and one
tail of both answer topics (no consumer group: every waiting process sees every answer),
opened before anything is sent, and routes each answer to whoever expects its request id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Protocol
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.kafka import partition_for, producer, tail_from_end
from core.settings import Settings
from schemas.events import (
    ConsistencySummary,
    UpscaleCancelled,
    UpscaleDone,
    UpscaleFailed,
    UpscaleRequested,
    UpscaleTileResult,
)
from schemas.registry import EventValidationError, parse_event
from schemas.topics import Priority, Topic, priority_partitions

log = structlog.get_logger(__name__)

Answer = UpscaleDone | UpscaleFailed
ANSWER_TOPICS = (Topic.UPSCALE_DONE.value, Topic.UPSCALE_FAILED.value)
# Someone is waiting: a short broker long poll (see core.kafka.tail_from_end).
FETCH_MAX_WAIT_MS = 20


class UpscaleError(RuntimeError):
    """The compute service answered some tiles with upscale.failed."""

    def __init__(self, failures: list[UpscaleFailed]) -> None:
        self.failures = failures
        reasons = sorted({f.reason for f in failures})
        super().__init__(f"{sum(len(f.tiles or []) or 1 for f in failures)} tile(s) failed: {'; '.join(reasons)}")


def merge_answers(parts: list[Answer]) -> Answer:
    """One answer for a request answered in several tile batches: the first failure if any
    batch failed, else every batch's tiles in one ``UpscaleDone`` (timings added up, the
    consistency summaries combined)."""
    failed = [part for part in parts if isinstance(part, UpscaleFailed)]
    if failed:
        return failed[0].model_copy(update={"remaining": 0})
    timings: dict[str, float] = {}
    for part in parts:
        assert isinstance(part, UpscaleDone)
        for name, ms in part.timings_ms.items():
            timings[name] = timings.get(name, 0.0) + ms
    done = [part for part in parts if isinstance(part, UpscaleDone)]
    results = [result for part in done for result in part.results]
    consistency = ConsistencySummary.merged([part.consistency for part in done])
    return parts[-1].model_copy(update={"results": results, "timings_ms": timings, "remaining": 0,
                                        "consistency": consistency})


class UpscaleGateway(Protocol):
    """What services need of the compute service: one request, its merged answer."""

    async def request(self, event: UpscaleRequested, timeout_s: float) -> Answer | None:
        """Send ``event``; its answer, or None if none came within ``timeout_s``."""
        ...


class Expected:
    """Answers of a set of requests, registered before they are sent."""

    def __init__(self, request_ids: Iterable[UUID]) -> None:
        self.parts: dict[UUID, list[Answer]] = {rid: [] for rid in request_ids}
        self.open = set(self.parts)
        self._queue: asyncio.Queue[Answer] = asyncio.Queue()

    def deliver(self, answer: Answer) -> None:
        self._queue.put_nowait(answer)

    async def answers(self) -> AsyncIterator[Answer]:
        """Each answer as it arrives, until every request has its last one."""
        while self.open:
            answer = await self._queue.get()
            self.parts[answer.request_id].append(answer)
            if answer.remaining == 0:
                self.open.discard(answer.request_id)
            yield answer

    async def collect(self, timeout_s: float) -> dict[UUID, list[Answer]]:
        """Every answer of every request; TimeoutError naming how many are unanswered."""
        async def drain() -> None:
            async for _ in self.answers():
                pass

        try:
            await asyncio.wait_for(drain(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{len(self.open)} of {len(self.parts)} request(s) unanswered after "
                               f"{timeout_s:.0f} s") from None
        return self.parts


class UpscaleClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._exits: AsyncExitStack | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._expected: dict[UUID, Expected] = {}
        self._listeners: list[Callable[[Answer], None]] = []

    def listen(self, callback: Callable[[Answer], None]) -> None:
        """Call ``callback`` with every answer seen, whoever asked (the viewer's live tile
        updates: a browser waits for tiles that another request may have produced)."""
        self._listeners.append(callback)

    async def __aenter__(self) -> UpscaleClient:
        exits = AsyncExitStack()
        try:
            consumer = await exits.enter_async_context(
                tail_from_end(self.settings, *ANSWER_TOPICS, fetch_max_wait_ms=FETCH_MAX_WAIT_MS, wait_s=30))
            # No linger: an interactive request is sent alone and someone is waiting for it.
            self._producer = await exits.enter_async_context(producer(self.settings, linger_ms=0))
        except BaseException:
            await exits.aclose()
            raise
        self._exits = exits
        self._reader = asyncio.create_task(self._route(consumer), name="upscale-answers")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._exits is not None:
            await self._exits.aclose()
        self._expected.clear()

    async def _route(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            try:
                event = parse_event(record.topic, record.value)
            except EventValidationError:
                continue  # the agents dead-letter bad answers; a waiter only wants its own
            if isinstance(event, UpscaleDone | UpscaleFailed):
                expected = self._expected.get(event.request_id)
                if expected is not None:
                    expected.deliver(event)
                for listener in self._listeners:
                    try:
                        listener(event)
                    except Exception:  # one listener's bug must not stop answers for everyone
                        log.exception("upscale.listener_failed")

    def expect(self, request_ids: Iterable[UUID]) -> Expected:
        """Register interest in ``request_ids``' answers; call before sending them."""
        expected = Expected(request_ids)
        for rid in expected.parts:
            self._expected[rid] = expected
        return expected

    def forget(self, expected: Expected) -> None:
        for rid in expected.parts:
            if self._expected.get(rid) is expected:
                del self._expected[rid]

    async def send(self, requests: Iterable[tuple[UpscaleRequested, int | None]]) -> None:
        """Send each request to its partition (None: its priority class, fixed per slide)."""
        if self._producer is None:
            raise RuntimeError("use UpscaleClient as an async context manager")
        sends = []
        for request, partition in requests:
            priority = Priority(request.priority)
            p = partition if partition is not None else partition_for(priority, request.exam_id,
                                                                      request.slide_number)
            if p not in priority_partitions(priority):
                raise ValueError(f"partition {p} does not carry {priority.value} requests")
            sends.append(await self._producer.send(Topic.UPSCALE_REQUESTED.value, request.to_json_bytes(),
                                                   key=request.exam_id.encode(), partition=p))
        await asyncio.gather(*sends)

    async def cancel(self, event: UpscaleCancelled) -> None:
        """Tell the worker holding a request that these tiles are no longer wanted. Sent to
        the request's partition number (requests sent with the default partition only):
        upscale.cancelled is co-partitioned with upscale.requested."""
        if self._producer is None:
            raise RuntimeError("use UpscaleClient as an async context manager")
        p = partition_for(Priority(event.priority), event.exam_id, event.slide_number)
        await self._producer.send_and_wait(Topic.UPSCALE_CANCELLED.value, event.to_json_bytes(),
                                           key=event.exam_id.encode(), partition=p)

    async def request(self, event: UpscaleRequested, timeout_s: float) -> Answer | None:
        """``UpscaleGateway``: send one request; its merged answer, None after ``timeout_s``."""
        expected = self.expect([event.request_id])
        try:
            await self.send([(event, None)])
            parts = (await expected.collect(timeout_s))[event.request_id]
        except TimeoutError:
            log.info("upscale.timeout", exam_id=event.exam_id, slide=event.slide_number,
                     request_id=str(event.request_id), timeout_s=timeout_s)
            return None
        finally:
            self.forget(expected)
        return merge_answers(parts)


async def upscale_tiles(settings: Settings, request: UpscaleRequested, timeout_s: float = 120.0,
                        ) -> list[UpscaleTileResult]:
    """Send one request and return its tiles once all are answered; UpscaleError if any failed."""
    async with UpscaleClient(settings) as client:
        expected = client.expect([request.request_id])
        await client.send([(request, None)])
        answers = (await expected.collect(timeout_s))[request.request_id]
    failures = [a for a in answers if isinstance(a, UpscaleFailed)]
    if failures:
        raise UpscaleError(failures)
    results: dict[tuple[int, int, int], UpscaleTileResult] = {}
    for answer in answers:
        if isinstance(answer, UpscaleDone):
            for result in answer.results:
                results[(result.tile.level, result.tile.col, result.tile.row)] = result
    return list(results.values())
