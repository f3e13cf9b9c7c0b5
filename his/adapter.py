"""Turns HIS messages into ``patient.admitted`` / ``patient.discharged`` events.

An HL7 message is acknowledged (AA) only after Kafka acknowledged the event (acks=all), so
an ACK means the event is durable. If Kafka cannot take it in time the answer is AE and the
HIS resends; a message we can never accept gets AR. Either way the reason is in MSA-3.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, tzinfo

import structlog

from catalog.provenance import ForgedEvent, check_not_future
from core.kafka import EventSink
from his import hl7_adt
from his.hl7_adt import AdtEvent, Hl7Rejected
from schemas.events import PatientAdmitted

log = structlog.get_logger(__name__)


class PublishFailed(Exception):
    pass


class EventRefused(Exception):
    """The message is well formed but may not be obeyed (e.g. dated in the future)."""


class HisAdapter:
    def __init__(self, publish: EventSink, *, tz: tzinfo = UTC, publish_timeout_s: float = 15.0) -> None:
        self._publish = publish
        self._tz = tz
        self._timeout = publish_timeout_s

    async def publish(self, event: AdtEvent) -> None:
        at = event.admitted_at if isinstance(event, PatientAdmitted) else event.discharged_at
        try:
            check_not_future("event time", at, datetime.now(UTC))
        except ForgedEvent as exc:
            raise EventRefused(str(exc)) from None
        try:
            await asyncio.wait_for(self._publish(event), self._timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means "not durable": tell the sender
            log.warning("his.publish_failed", event_type=event.event_type, error=type(exc).__name__)
            raise PublishFailed(f"could not hand the event to Kafka ({type(exc).__name__})") from None

    async def handle_hl7(self, raw: bytes) -> bytes:
        """One MLLP block in, the ACK/NAK block out (never raises)."""
        message = None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # HL7's traditional 8-bit default
        try:
            message = hl7_adt.parse_message(text)
            event = hl7_adt.to_event(message, self._tz)
            await self.publish(event)
        except Hl7Rejected as exc:
            log.info("his.hl7_rejected", code=exc.code, reason=exc.reason)
            return hl7_adt.ack(message, exc.code, exc.reason).encode()
        except EventRefused as exc:
            log.info("his.hl7_refused", reason=str(exc))
            return hl7_adt.ack(message, "AR", str(exc)).encode()
        except PublishFailed as exc:
            return hl7_adt.ack(message, "AE", str(exc)).encode()
        log.info("his.hl7_accepted", event_type=event.event_type, event_id=str(event.event_id))
        return hl7_adt.ack(message, "AA").encode()
