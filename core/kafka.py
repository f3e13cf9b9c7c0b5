"""The Kafka client for everything outside the Faust agents (services, CLI, demo, bench).

The one home of Kafka client configuration: every aiokafka client in the project is built
here (``new_producer``, ``new_consumer``, ``new_admin``) with the broker's address and the
principal's SASL/SCRAM-SHA-512 credentials (``client_options``); the Faust app takes the same
credentials (``kafka_credentials``). One producer configuration (idempotent, ``acks=all``, a
short explicit linger), one way to publish an event (``KafkaSink``, behind the ``EventSink`` protocol that services take), one
way to read a topic from its current end without a consumer group (``tail_from_end``), and
the partition helpers. Agents publish through Faust (``agents.messaging.FaustSink``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import BaseModel

from core.secrets import install_secret
from core.settings import Settings
from schemas.events import Event
from schemas.topics import Priority, priority_partitions

T = TypeVar("T")

# Idempotence: a retried send after a lost acknowledgement is not stored twice. A 5 ms
# linger batches a burst (whole-slide fan-out) without delaying a lone request noticeably.
PRODUCER_OPTIONS: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}


SASL_MECHANISM = "SCRAM-SHA-512"

# Who connects: the application's services, the HIS adapter (writes patient events only), the
# scanner ingest (writes slide.scanned, reads its verdicts) or the broker's super user
# (bootstrap: topics, ACLs). infra.kafka_acls grants each.
Principal = Literal["app", "his", "scanner", "admin"]


def kafka_credentials(settings: Settings, principal: Principal = "app") -> tuple[str, str]:
    """(user name, password) of ``principal``: the configured password, else this install's own
    (made once, ``<state_dir>/secrets/kafka-<user>.password``, mode 0600)."""
    kafka = settings.kafka
    user, configured = {
        "app": (kafka.username, kafka.password),
        "his": (kafka.his_username, kafka.his_password),
        "scanner": (kafka.scanner_username, kafka.scanner_password),
        "admin": (kafka.admin_username, kafka.admin_password),
    }[principal]
    if configured is not None:
        return user, configured.get_secret_value()
    # Hex: SCRAM passwords are strings, and JAAS/properties files need no quoting for it.
    return user, install_secret(settings.state_dir / "secrets", f"kafka-{user}.password").hex()


def client_options(settings: Settings, principal: Principal = "app") -> dict[str, Any]:
    """Connection and authentication keywords shared by every aiokafka client."""
    user, password = kafka_credentials(settings, principal)
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka.bootstrap,
        "security_protocol": settings.kafka.security_protocol,
        "sasl_mechanism": SASL_MECHANISM,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for SASL_SSL (the system's CA certificates); None for SASL_PLAINTEXT."""
    if settings.kafka.security_protocol != "SASL_SSL":
        return None
    from aiokafka.helpers import create_ssl_context

    context: ssl.SSLContext = create_ssl_context()
    return context


def new_producer(settings: Settings, *, principal: Principal = "app", **overrides: Any) -> AIOKafkaProducer:
    """An unstarted producer with the project's settings (``overrides`` for timeouts)."""
    return AIOKafkaProducer(**client_options(settings, principal), **{**PRODUCER_OPTIONS, **overrides})


def new_consumer(settings: Settings, *topics: str, principal: Principal = "app", **options: Any) -> AIOKafkaConsumer:
    """An unstarted consumer (``options``: group, offsets, fetch tuning)."""
    return AIOKafkaConsumer(*topics, **client_options(settings, principal), **options)


def new_admin(settings: Settings, *, principal: Principal = "app", **options: Any) -> AIOKafkaAdminClient:
    """An unstarted admin client."""
    return AIOKafkaAdminClient(**client_options(settings, principal), **options)


@asynccontextmanager
async def producer(settings: Settings, *, principal: Principal = "app", **overrides: Any,
                   ) -> AsyncIterator[AIOKafkaProducer]:
    prod = new_producer(settings, principal=principal, **overrides)
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


async def send_event(prod: AIOKafkaProducer, topic: str, event: BaseModel, key: str | None = None,
                     partition: int | None = None) -> None:
    await prod.send_and_wait(topic, event.model_dump_json().encode(), key=key.encode() if key else None,
                             partition=partition)


class EventSink(Protocol):
    """How services publish without knowing Faust or aiokafka; returns once the broker
    acknowledged the event."""

    async def __call__(self, event: Event, *, partition: int | None = None) -> None: ...


class KafkaSink:
    """Publishes with an aiokafka producer, keyed by ``event.kafka_key()``."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def __call__(self, event: Event, *, partition: int | None = None) -> None:
        key = event.kafka_key()
        await self._producer.send_and_wait(
            event.topic.value, event.to_json_bytes(), key=key.encode() if key else None, partition=partition)


def partition_for(priority: Priority, exam_id: str, slide_number: int) -> int:
    """A partition of ``priority``'s class, fixed per slide so one slide's requests stay in
    order on one partition while different slides spread over the class's partitions."""
    partitions = priority_partitions(priority)
    return partitions[zlib.crc32(f"{exam_id}/{slide_number}".encode()) % len(partitions)]


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """Partition numbers of ``topic`` as the broker knows them now.

    A consumer without subscriptions caches metadata only for topics it was asked about, and
    aiokafka has no public call that refreshes that cache (``topics()`` returns a separate
    copy), so this is the one place that asks the client for a metadata update."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - see the docstring
        partitions = consumer.partitions_for_topic(topic)
    return sorted(partitions or ())


async def _assign_at_end(consumer: AIOKafkaConsumer, topics: Sequence[str], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        found = {topic: await topic_partitions(consumer, topic) for topic in topics}
        missing = [topic for topic, parts in found.items() if not parts]
        if not missing:
            break
        if time.monotonic() >= deadline:
            raise RuntimeError(f"topic(s) {', '.join(missing)} do not exist; run `slidestream up` to bootstrap")
        await asyncio.sleep(0.5)
    tps = [TopicPartition(topic, p) for topic, parts in found.items() for p in parts]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # resolve the lazy seek now, before the caller sends anything
        await consumer.position(tp)


@asynccontextmanager
async def tail_from_end(settings: Settings, *topics: str, fetch_max_wait_ms: int = 500,
                        wait_s: float = 0.0, principal: Principal = "app") -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer positioned at the current end of every partition of ``topics``, with no
    consumer group (every tailing process sees every record): open it before sending what
    it should see the answers to. ``wait_s``: how long to wait for the topics to exist.

    ``fetch_max_wait_ms`` bounds the broker's long poll: aiokafka keeps one fetch in flight
    per broker and leaves out partitions that still had buffered records when it was sent,
    so a record landing on one of those waits for that fetch; someone waiting interactively
    wants ~20 ms rather than the 500 ms default."""
    consumer = new_consumer(settings, principal=principal, enable_auto_commit=False,
                            fetch_max_wait_ms=fetch_max_wait_ms)
    await consumer.start()
    try:
        await _assign_at_end(consumer, topics, wait_s)
        yield consumer
    finally:
        await consumer.stop()


async def records_since(settings: Settings, topic: str, since: datetime, *, limit: int = 1000,
                        ) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of ``topic`` written at or after ``since``, up to the current end, oldest first
    per partition (at most ``limit`` in all, the newest kept). No consumer group."""
    consumer = new_consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        if not tps:
            raise RuntimeError(f"topic {topic} does not exist; run `slidestream up` to bootstrap")
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        found: list[ConsumerRecord[bytes, bytes]] = []
        for tp in tps:
            start = starts.get(tp)
            if start is None or start.offset >= ends[tp]:
                continue
            consumer.seek(tp, start.offset)
            idle_polls = 0
            while await consumer.position(tp) < ends[tp] and idle_polls < 5:  # 5 empty polls: give up
                batch = await consumer.getmany(tp, timeout_ms=1000)
                idle_polls = 0 if batch.get(tp) else idle_polls + 1
                found += [r for r in batch.get(tp, []) if r.offset < ends[tp]]
        found.sort(key=lambda r: r.timestamp)
        return found[-limit:]
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
