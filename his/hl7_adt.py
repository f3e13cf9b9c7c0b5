"""HL7 v2 ADT messages -> slidestream events, and the acknowledgements sent back.

Handled: ADT^A01 (admit) -> ``patient.admitted``, ADT^A03 (discharge) -> ``patient.discharged``.
Fields read (HL7 v2.3 - v2.8 positions):

    MSH-9   message type (ADT^A01 / ADT^A03)        MSH-10  control ID (echoed in MSA-2)
    MSH-3/4 sending application and facility: with MSH-10 they name the message, so a resend
            (after AE, or a lost ACK) becomes an event with the same ``event_id``
    EVN-2   event time (else PV1-44 admit / PV1-45 discharge, else MSH-7)
    PID-3   patient identifier list: the first repetition's ID is the patient ID
    PID-5   name (family^given), PID-7 birth date, PID-8 sex  (identity; never logged)
    PV1-3   assigned location: its point of care (first component) is the ward
    PV1-19  visit number

Times without a UTC offset are read in the configured hospital time zone.
Errors become an ``Hl7Rejected`` with an ACK code: ``AR`` for messages we will never accept
(malformed, unsupported type, invalid ID), ``AE`` for failures on our side (the HIS should
resend). Reasons name fields, never their values: they go back over the wire and into logs.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import hl7
from pydantic import ValidationError

from schemas.common import PatientIdentity
from schemas.events import PatientAdmitted, PatientDischarged
from schemas.ids import is_valid_id
from schemas.registry import describe_validation_error

AdtEvent = PatientAdmitted | PatientDischarged
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?$")
_SEX = {"F": "F", "M": "M", "O": "O", "U": "U", "A": "O", "N": "U"}


class Hl7Rejected(Exception):
    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


def parse_ts(text: str, tz: tzinfo = UTC) -> datetime:
    """An HL7 TS/DTM (``YYYYMMDD[HHMM[SS[.SSSS]]][+/-ZZZZ]``) as an aware datetime."""
    match = _TS.match(text.strip())
    if not match or match.group(3) is None:
        raise ValueError("not an HL7 date/time (YYYYMMDD[HHMM[SS]][+ZZZZ])")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0").ljust(6, "0")[:6])
    zone = tz
    if offset:
        sign = 1 if offset[0] == "+" else -1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro,
                    tzinfo=zone).astimezone(UTC)


def _field(message: hl7.Message, path: str) -> str:
    try:
        return str(message[path]).strip()
    except (KeyError, IndexError):
        return ""


def parse_message(text: str) -> hl7.Message:
    if not text.startswith("MSH"):
        raise Hl7Rejected("AR", "message does not start with an MSH segment")
    try:
        message = hl7.parse(text.replace("\r\n", "\r").replace("\n", "\r"))
    except Exception as exc:  # noqa: BLE001 - python-hl7 raises several types for bad input
        raise Hl7Rejected("AR", f"unparseable HL7: {type(exc).__name__}") from None
    return message


def _event_time(message: hl7.Message, fallback_field: str, tz: tzinfo) -> datetime:
    for path in ("EVN.F2", fallback_field, "MSH.F7"):
        text = _field(message, path)
        if text:
            try:
                return parse_ts(text, tz)
            except ValueError:
                raise Hl7Rejected("AR", f"{path.replace('.F', '-')} is not a valid HL7 date/time") from None
    raise Hl7Rejected("AR", "no event time (EVN-2, PV1-44/45 or MSH-7)")


def _identity(message: hl7.Message) -> PatientIdentity | None:
    family, given = _field(message, "PID.F5.R1.C1"), _field(message, "PID.F5.R1.C2")
    birth, sex = _field(message, "PID.F7"), _field(message, "PID.F8")
    values: dict[str, object] = {}
    if family:
        values["family_name"] = family[:256]
    if given:
        values["given_name"] = given[:256]
    if family or given:
        values["name"] = " ".join(part for part in (given, family) if part)[:256]
    if birth:
        try:
            values["birth_date"] = parse_ts(birth[:8]).date()
        except ValueError:
            raise Hl7Rejected("AR", "PID-7 is not a valid date") from None
    if sex:
        values["sex"] = _SEX.get(sex.upper()[:1], "U")
    return PatientIdentity(**values) if values else None  # type: ignore[arg-type]  # keys are PatientIdentity fields


_MESSAGE_NAMESPACE = uuid.UUID("2b0f5d8e-63a1-4f0e-9c55-0d7f7d1b6a43")


def message_event_id(message: hl7.Message) -> uuid.UUID:
    """One event id per HL7 message (sending application, facility, control ID), so that a
    resent message is recognisably the same event; a random one without a control ID."""
    control = _field(message, "MSH.F10")
    if not control:
        return uuid.uuid4()
    sender = f"{_field(message, 'MSH.F3.R1.C1')}|{_field(message, 'MSH.F4.R1.C1')}"
    return uuid.uuid5(_MESSAGE_NAMESPACE, f"{sender}|{control}")


def to_event(message: hl7.Message, tz: tzinfo = UTC) -> AdtEvent:
    kind, trigger = _field(message, "MSH.F9.R1.C1"), _field(message, "MSH.F9.R1.C2")
    if kind != "ADT" or trigger not in ("A01", "A03"):
        raise Hl7Rejected("AR", f"message type {kind or '?'}^{trigger or '?'} is not handled "
                                "(ADT^A01 and ADT^A03 are)")
    patient_id = _field(message, "PID.F3.R1.C1")
    if not patient_id:
        raise Hl7Rejected("AR", "PID-3 patient identifier is missing")
    if not is_valid_id(patient_id):
        raise Hl7Rejected("AR", "PID-3 patient identifier has characters or a length slidestream does not accept")
    visit = _field(message, "PV1.F19.R1.C1") or None
    if visit is not None and not is_valid_id(visit):
        raise Hl7Rejected("AR", "PV1-19 visit number has characters or a length slidestream does not accept")
    event_id = message_event_id(message)
    try:
        if trigger == "A01":
            ward = _field(message, "PV1.F3.R1.C1")[:256] or None
            return PatientAdmitted(event_id=event_id, patient_id=patient_id, visit_id=visit, ward=ward,
                                   admitted_at=_event_time(message, "PV1.F44", tz), identity=_identity(message))
        return PatientDischarged(event_id=event_id, patient_id=patient_id, visit_id=visit,
                                 discharged_at=_event_time(message, "PV1.F45", tz))
    except ValidationError as exc:
        reason, _ = describe_validation_error(exc)
        raise Hl7Rejected("AR", f"invalid field: {reason}") from None


def _escape(text: str) -> str:
    """HL7 escape sequences for the delimiters, so a reason cannot break the ACK's structure."""
    out = text.replace("\\", "\\E\\")
    for char, code in (("|", "\\F\\"), ("^", "\\S\\"), ("~", "\\R\\"), ("&", "\\T\\")):
        out = out.replace(char, code)
    return "".join(ch if 32 <= ord(ch) < 127 else " " for ch in out)[:200]


def ack(message: hl7.Message | None, code: str, reason: str = "") -> str:
    """ACK (``AA``) or NAK (``AE``/``AR``) for ``message``, with ``reason`` in MSA-3; a minimal
    ACK when the message could not be parsed at all."""
    if message is not None:
        try:
            reply = message.create_ack(code, application="SLIDESTREAM")
            text = str(reply).rstrip("\r")
            return f"{text}|{_escape(reason)}" if reason else text
        except Exception:  # noqa: BLE001 - a broken MSH: fall back to the minimal form
            pass
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    control = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    msh = f"MSH|^~\\&|SLIDESTREAM||||{stamp}||ACK|{control}|P|2.5"
    return f"{msh}\rMSA|{code}||{_escape(reason)}"


def build_adt(trigger: str, patient_id: str, at: datetime, control_id: str, *, visit_id: str | None = None,
              ward: str | None = None, sender: str = "HIS") -> str:
    """A minimal HL7 v2.5 ADT^A01 (admission) or ADT^A03 (discharge), as a HIS would send it
    (``slidestream his send``, the demo). No name or birth date: not needed here."""
    if trigger not in ("A01", "A03"):
        raise ValueError(f"trigger must be A01 (admit) or A03 (discharge), not {trigger!r}")
    stamp = at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    pv1 = f"PV1|1|I|{_escape(ward or '')}" + "|" * 16 + _escape(visit_id or "")
    return "\r".join([
        f"MSH|^~\\&|{_escape(sender)}|HOSPITAL|SLIDESTREAM|PATHOLOGY|{stamp}||ADT^{trigger}^ADT_{trigger}|"
        f"{_escape(control_id)}|P|2.5",
        f"EVN|{trigger}|{stamp}",
        f"PID|1||{_escape(patient_id)}^^^HOSPITAL^MR",
        pv1,
    ])

