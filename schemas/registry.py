"""Topic name -> event model, and the one entry point that turns Kafka bytes into an event.

``parse_event`` never lets a pydantic or JSON error escape: agents catch
``EventValidationError`` and send the message to the dead-letter topic with ``reason``.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Annotated, Any, Union, get_args

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from schemas.catalog import CATALOG_MODELS
from schemas.common import SENSITIVE_FIELDS
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


def _model_field_names(model: type[BaseModel], into: set[str]) -> None:
    if model.__name__ in into:
        return
    into.add(model.__name__)  # pydantic names a union member in an error location by its class
    for name, field in model.model_fields.items():
        into.add(name)
        if field.alias:
            into.add(field.alias)
        _annotation_models(field.annotation, into)


def _annotation_models(annotation: object, into: set[str]) -> None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        _model_field_names(annotation, into)
    for arg in get_args(annotation):
        _annotation_models(arg, into)


@cache
def field_names() -> frozenset[str]:
    """Every field name of every event and catalog model, at any depth: the only input keys
    that may be repeated in a rejection reason or a dead letter (any other key of a message
    is the sender's text, and may be a patient's name)."""
    names: set[str] = set(SENSITIVE_FIELDS)  # names of identity fields, not identity data
    for model in (*_MODELS, *CATALOG_MODELS):
        _model_field_names(model, names)
    return frozenset(names)
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


# Messages of these error types can quote the input (a union's tag, a validator's text):
# they are replaced by a fixed text naming only the problem.
_QUOTING_ERRORS = {
    "union_tag_invalid": "unknown type (event_type or discriminator not recognised)",
    "union_tag_not_found": "missing discriminator field",
}
UNEXPECTED_KEY = "(unexpected key)"


def safe_location(loc: tuple[int | str, ...], error_type: str, known: frozenset[str] | None = None) -> str:
    """An error location naming declared fields and list positions only. The last part of an
    ``extra_forbidden`` error is the sender's key, and may be a patient's name; with ``known``
    (the field names the input may use), any other part not among them (a dict's key) too."""
    parts = []
    for index, part in enumerate(loc):
        input_key = error_type == "extra_forbidden" and index == len(loc) - 1
        unsafe = part not in known if known is not None else input_key
        if not isinstance(part, int) and unsafe:
            parts.append(UNEXPECTED_KEY)
        else:
            parts.append(str(part))
    return ".".join(parts)


def safe_message(err: Any) -> str:
    """The message of one pydantic error (``ValidationError.errors()`` item) without any part
    of the input in it."""
    if err["type"] in _QUOTING_ERRORS:
        return _QUOTING_ERRORS[err["type"]]
    message = str(err["msg"])
    value = err.get("input")
    # A validator's message that quotes the value it refused (none of ours do; a guard).
    if isinstance(value, str | int | float) and not isinstance(value, bool) and len(str(value)) >= 2:
        message = message.replace(str(value), "(value)")
    return message


def describe_validation_error(exc: ValidationError) -> tuple[str, tuple[str, ...]]:
    """Readable summary of a pydantic error naming fields, never echoing input values or
    input keys (either may be patient identity data)."""
    lines: list[str] = []
    fields: list[str] = []
    errors = exc.errors(include_url=False, include_context=False)
    for err in errors[:MAX_REPORTED_ERRORS]:
        loc = safe_location(err["loc"], err["type"], field_names()) or "(event)"
        fields.append(loc)
        lines.append(f"{loc}: {safe_message(err)}")
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
        known = {topic.value for topic in Topic}
        got = (repr(event_type) if isinstance(event_type, str) and event_type in known
               else "none" if event_type is None else "an unknown value")
        raise EventValidationError(name, f"event_type: expected {name!r}, got {got}", fields=("event_type",))
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
