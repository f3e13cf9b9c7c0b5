"""Asking the compute service for tiles from outside the agents (demo, whole-slide jobs, bench).

``AnswerStream`` tails ``upscale.done`` and ``upscale.failed`` from their current end (no
consumer group: every waiting process sees every answer), so it must be opened before the
requests are sent. Answers come per tile batch; a request is finished when an answer with
``remaining == 0`` arrives (``schemas.events.UpscaleDone.remaining``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.events import UpscaleDone, UpscaleFailed, UpscaleRequested, UpscaleTileResult
from schemas.registry import EventValidationError, parse_event
from schemas.topics import Priority, Topic, priority_partitions
from slidestream.settings import Settings
from storage.upscale import partition_for

Answer = UpscaleDone | UpscaleFailed
ANSWER_TOPICS = (Topic.UPSCALE_DONE.value, Topic.UPSCALE_FAILED.value)
FETCH_MAX_WAIT_MS = 20


class UpscaleError(RuntimeError):
    """The compute service answered some tiles with upscale.failed."""

    def __init__(self, failures: list[UpscaleFailed]) -> None:
        self.failures = failures
        reasons = sorted({f.reason for f in failures})
        super().__init__(f"{sum(len(f.tiles or []) or 1 for f in failures)} tile(s) failed: {'; '.join(reasons)}")


class AnswerStream:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> "AnswerStream":
        # fetch_max_wait_ms: aiokafka keeps one fetch in flight per broker and leaves out the
        # partitions that still had buffered records when it was sent; an answer landing on
        # one of those waits for that fetch to come back. The default (500 ms) showed up as
        # a 500 ms floor on every round trip after the first.
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
        await consumer.start()
        try:
            tps: list[TopicPartition] = []
            deadline = time.monotonic() + 30
            while not tps:
                # aiokafka's cached metadata may not list the topics yet
                await consumer._client.force_metadata_update()  # noqa: SLF001
                tps = [TopicPartition(t, p) for t in ANSWER_TOPICS for p in sorted(consumer.partitions_for_topic(t) or ())]
                if len(tps) and len({tp.topic for tp in tps}) < len(ANSWER_TOPICS):
                    tps = []
                if not tps:
                    if time.monotonic() > deadline:
                        raise RuntimeError("topics upscale.done / upscale.failed do not exist; bootstrap the stack")
                    await asyncio.sleep(0.5)
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:  # settle the positions before anything is sent
                await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def answers(self) -> AsyncIterator[Answer]:
        assert self._consumer is not None, "use AnswerStream as an async context manager"
        async for record in self._consumer:
            try:
                event = parse_event(record.topic, record.value)
            except EventValidationError:
                continue  # dead-lettered by the agents; not ours to judge here
            if isinstance(event, UpscaleDone | UpscaleFailed):
                yield event


async def send_requests(settings: Settings, requests: Iterable[tuple[UpscaleRequested, int | None]]) -> None:
    """Send each request to its partition (None: its priority class, spread by slide)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = []
        for request, partition in requests:
            p = partition if partition is not None else partition_for(Priority(request.priority), request.exam_id,
                                                                      request.slide_number)
            if p not in priority_partitions(Priority(request.priority)):
                raise ValueError(f"partition {p} does not carry {Priority(request.priority).value} requests")
            sends.append(await producer.send(Topic.UPSCALE_REQUESTED.value, request.to_json_bytes(),
                                             key=request.exam_id.encode(), partition=p))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def collect(stream: AnswerStream, request_ids: set[UUID], timeout_s: float,
                  ) -> dict[UUID, list[Answer]]:
    """All answers of ``request_ids`` until each is finished (``remaining == 0``)."""
    got: dict[UUID, list[Answer]] = {rid: [] for rid in request_ids}
    open_ids = set(request_ids)

    async def run() -> None:
        async for answer in stream.answers():
            if answer.request_id in got:
                got[answer.request_id].append(answer)
                if answer.remaining == 0:
                    open_ids.discard(answer.request_id)
                    if not open_ids:
                        return

    try:
        await asyncio.wait_for(run(), timeout_s)
    except TimeoutError:
        raise TimeoutError(f"{len(open_ids)} of {len(request_ids)} request(s) unanswered after {timeout_s:.0f} s") from None
    return got


async def upscale_tiles(settings: Settings, request: UpscaleRequested, timeout_s: float = 120.0,
                        ) -> list[UpscaleTileResult]:
    """Send one request and return its tiles once all are answered; UpscaleError if any failed."""
    async with AnswerStream(settings) as stream:
        await send_requests(settings, [(request, None)])
        answers = (await collect(stream, {request.request_id}, timeout_s))[request.request_id]
    failures = [a for a in answers if isinstance(a, UpscaleFailed)]
    if failures:
        raise UpscaleError(failures)
    results: dict[tuple[int, int, int], UpscaleTileResult] = {}
    for answer in answers:
        for result in answer.results:  # type: ignore[union-attr]
            results[(result.tile.level, result.tile.col, result.tile.row)] = result
    return list(results.values())
