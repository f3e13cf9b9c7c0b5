"""How services publish events without knowing about Faust or aiokafka.

Services take an ``EventSink``: in a Faust agent it sends through the app's producer, in the
CLI, demo and benches through an aiokafka producer (``KafkaSink``). Either way the call
returns after the broker acknowledged the event.
"""

from __future__ import annotations

from typing import Protocol

from schemas.events import Event


class EventSink(Protocol):
    async def __call__(self, event: Event, *, partition: int | None = None) -> None: ...


class KafkaSink:
    """Publishes with an aiokafka producer (``acks=all``), keyed by ``event.kafka_key()``."""

    def __init__(self, producer: object) -> None:
        self._producer = producer

    async def __call__(self, event: Event, *, partition: int | None = None) -> None:
        key = event.kafka_key()
        await self._producer.send_and_wait(  # type: ignore[attr-defined]
            event.topic.value, event.to_json_bytes(), key=key.encode() if key else None, partition=partition)


class FaustSink:
    """Publishes through a Faust app (used inside agents)."""

    def __init__(self, app: object) -> None:
        self._app = app

    async def __call__(self, event: Event, *, partition: int | None = None) -> None:
        from agents.messaging import publish

        await publish(self._app, event.topic.value, event, key=event.kafka_key(), partition=partition)

