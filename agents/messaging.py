"""Bytes in, validated events out: the one path every agent uses to read and write Kafka.

Agents subscribe with the raw codec so that a payload that is not even JSON still reaches
us (instead of crashing Faust's deserializer) and can be dead-lettered with its reason.
"""

from __future__ import annotations

from typing import Any

import faust
import structlog
from pydantic import BaseModel

from schemas.events import Event
from schemas.topics import Topic

log = structlog.get_logger(__name__)


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """A topic handle that hands agents undecoded bytes."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json().encode("utf-8")


async def publish(app: faust.App, topic: str, event: BaseModel, *, key: str | None = None,
                  partition: int | None = None) -> None:
    """Send one event and wait for the broker's acknowledgement (at-least-once)."""
    fut = await app.send(
        raw_topic(app, topic),
        key=key.encode("utf-8") if key is not None else None,
        value=encode(event),
        partition=partition,
    )
    await fut


class FaustSink:
    """``core.kafka.EventSink`` for services called from agents: publishes through the app."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def __call__(self, event: Event, *, partition: int | None = None) -> None:
        await publish(self._app, event.topic.value, event, key=event.kafka_key(), partition=partition)


def dead_letter_event(message: Any, reason: str) -> Event:
    """The message's dead letter: reason, coordinates, a redacted copy or digest, never the
    raw payload or key (``core.dead_letters``)."""
    from core.dead_letters import dead_letter as make_dead_letter

    return make_dead_letter(message.value, source_topic=message.topic, partition=message.partition,
                            offset=message.offset, error=reason, key=message.key)


async def dead_letter(app: faust.App, message: Any, reason: str) -> None:
    """Park a message we cannot process, with the reason; the agent then moves on. The
    record's key is the dead letter's own event id (the original key may be a patient ID)."""
    letter = dead_letter_event(message, reason)
    await publish(app, Topic.DEAD_LETTER.value, letter, key=letter.kafka_key())
    # Only the reason and coordinates are logged: the payload may hold identity data.
    log.warning("event.dead_lettered", topic=message.topic, partition=message.partition,
                offset=message.offset, reason=reason)


async def decode(app: faust.App, message: Any, *, report: bool = True) -> BaseModel | None:
    """The validated event of ``message``, or None after dead-lettering it (``report`` False:
    a second agent on the same topic, which leaves the dead letter to the first)."""
    from schemas.registry import EventValidationError, parse_event

    try:
        return parse_event(message.topic, message.value)
    except EventValidationError as exc:
        if report:
            await dead_letter(app, message, str(exc))
        return None
