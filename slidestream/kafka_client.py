"""Small aiokafka helpers for the CLI, demo and bench (agents use Faust instead)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from slidestream.settings import Settings

T = TypeVar("T")


@asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all", linger_ms=0)
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


async def send_event(prod: AIOKafkaProducer, topic: str, event: BaseModel, key: str | None = None,
                     partition: int | None = None) -> None:
    await prod.send_and_wait(topic, event.model_dump_json().encode(), key=key.encode() if key else None,
                             partition=partition)


@asynccontextmanager
async def tail(settings: Settings, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer positioned at the current end of every partition of ``topic``.

    Used to wait for answers to something we are about to send, without a consumer group.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - fresh cluster metadata
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise RuntimeError(f"topic {topic} does not exist; run `slidestream up` to bootstrap")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the lazy seek now, before the caller sends anything
            await consumer.position(tp)
        yield consumer
    finally:
        await consumer.stop()


async def wait_for(consumer: AIOKafkaConsumer, parse: Callable[[bytes], T | None], timeout: float) -> T:
    """The first record ``parse`` accepts (returns non-None), or TimeoutError."""
    async def _scan() -> T:
        async for record in consumer:
            found = parse(record.value)
            if found is not None:
                return found
        raise RuntimeError("consumer stopped")

    return await asyncio.wait_for(_scan(), timeout)
