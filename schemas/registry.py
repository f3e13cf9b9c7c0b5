"""Topic name -> event model, and the one entry point that turns Kafka bytes into an event.

``parse_event`` never lets a pydantic or JSON error escape: agents catch
``EventValidationError`` and send the message to the dead-letter topic with ``reason``.
"""

from __future__ import annotations

import json
from typing import Annotated, Union

from pydantic import Field, TypeAdapter, ValidationError

from schemas.events import (
    DeadLetter,
    DistributionAssigned,
    Event,
    PatientAdmitted,
    PatientDischarged,
    SlideQcFailed,
    SlideQcPassed,
    SlideScanned,
    SlideStored,
    TierMoved,
    UpscaleCancelled,
    UpscaleDone,
    UpscaleFailed,
    UpscaleRequested,
)
from schemas.topics import Topic

# Every event model, once: the topic map and the discriminated union are both built from it.
_MODELS: tuple[type[Event], ...] = (
    SlideScanned,
    SlideQcPassed,
    SlideQcFailed,
    SlideStored,
    UpscaleRequested,
    UpscaleDone,
    UpscaleFailed,
    UpscaleCancelled,
    PatientAdmitted,
    PatientDischarged,
    TierMoved,
    DistributionAssigned,
    DeadLetter,
)

EVENT_MODELS: dict[Topic, type[Event]] = {model.topic: model for model in _MODELS}

# Union over the tuple: the one list of event models above also feeds the topic map.
AnyEvent = Annotated[Union[_MODELS], Field(discriminator="event_type")]  # type: ignore[valid-type]  # noqa: UP007
_ANY_EVENT: TypeAdapter[Event] = TypeAdapter(AnyEvent)

MAX_EVENT_BYTES = 1 << 20  # events carry references, never image data
MAX_REPORTED_ERRORS = 20


class EventValidationError(ValueError):
    """A message that is not a valid event of its topic. ``reason`` is one readable line
    per problem, naming the field (``field.sub: message``); it never contains the input
    values, which may be patient identity data."""

    def __init__(self, topic: str, reason: str, *, fields: tuple[str, ...] = ()) -> None:
        self.topic = topic
        self.reason = reason
        self.fields = fields
        super().__init__(f"invalid {topic} event: {reason}")


def model_for(topic: str | Topic) -> type[Event]:
    try:
        return EVENT_MODELS[Topic(topic)]
    except ValueError:
        raise EventValidationError(str(topic), f"unknown topic {str(topic)!r}") from None


def describe_validation_error(exc: ValidationError) -> tuple[str, tuple[str, ...]]:
    """Readable summary of a pydantic error without echoing input values."""
    lines: list[str] = []
    fields: list[str] = []
    errors = exc.errors(include_url=False, include_input=False)
    for err in errors[:MAX_REPORTED_ERRORS]:
        loc = ".".join(str(part) for part in err["loc"]) or "(event)"
        fields.append(loc)
        lines.append(f"{loc}: {err['msg']}")
    if len(errors) > MAX_REPORTED_ERRORS:
        lines.append(f"... and {len(errors) - MAX_REPORTED_ERRORS} more errors")
    return "; ".join(lines), tuple(fields)


def parse_event(topic: str | Topic, raw: bytes | str) -> Event:
    """Validate one Kafka message value as an event of ``topic``."""
    model = model_for(topic)
    name = model.topic.value
    if raw is None:
        raise EventValidationError(name, "empty message (no value)")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventValidationError(name, f"message of {len(raw)} bytes exceeds {MAX_EVENT_BYTES}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventValidationError(name, f"message is not UTF-8 text (byte {exc.start})") from None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EventValidationError(name, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # e.g. "[" * 100_000: refuse it as bad input, do not crash the agent
        raise EventValidationError(name, "JSON nested too deeply to be an event") from None
    if not isinstance(document, dict):
        raise EventValidationError(name, f"expected a JSON object, got {type(document).__name__}")
    event_type = document.get("event_type")
    if event_type != name:
        raise EventValidationError(
            name,
            f"event_type: expected {name!r}, got {str(event_type)[:64]!r}",
            fields=("event_type",),
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        reason, fields = describe_validation_error(exc)
        raise EventValidationError(name, reason, fields=fields) from None


def parse_any_event(raw: bytes | str) -> Event:
    """Validate a message whose topic is unknown, dispatching on ``event_type``."""
    try:
        return _ANY_EVENT.validate_json(raw)
    except ValidationError as exc:
        reason, fields = describe_validation_error(exc)
        raise EventValidationError("(any)", reason, fields=fields) from None
