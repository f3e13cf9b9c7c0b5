"""HL7 v2 ADT parsing, acknowledgements and MLLP framing (no Kafka involved)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import hl7
import pytest
from hl7.mllp import open_hl7_connection

from his import hl7_adt
from his.hl7_adt import Hl7Rejected
from his.mllp import MllpListener
from schemas.events import PatientAdmitted, PatientDischarged


def adt(trigger: str = "A01", pid: str = "P12345^^^HOSP^MR", evn: str = "20260301115500",
        pv1_tail: str = "", extra: str = "") -> str:
    segments = [
        f"MSH|^~\\&|HIS|HOSP|SLIDESTREAM|PATH|20260301120000||ADT^{trigger}^ADT_{trigger}|MSG0001|P|2.5",
        f"EVN|{trigger}|{evn}",
        f"PID|1||{pid}||Doe^Jane||19700102|F",
        "PV1|1|I|WARD3^101^1" + "|" * 16 + "V777" + pv1_tail,
    ]
    return "\r".join(segments) + extra


def test_a01_becomes_patient_admitted_with_ward_visit_and_identity() -> None:
    event = hl7_adt.to_event(hl7_adt.parse_message(adt("A01")))
    assert isinstance(event, PatientAdmitted)
    assert event.patient_id == "P12345" and event.visit_id == "V777" and event.ward == "WARD3"
    assert event.admitted_at == datetime(2026, 3, 1, 11, 55, tzinfo=UTC)
    assert event.identity is not None
    assert event.identity.family_name == "Doe" and event.identity.given_name == "Jane"
    assert event.identity.birth_date.isoformat() == "1970-01-02" and event.identity.sex == "F"


def test_a03_becomes_patient_discharged() -> None:
    event = hl7_adt.to_event(hl7_adt.parse_message(adt("A03")))
    assert isinstance(event, PatientDischarged)
    assert event.patient_id == "P12345" and event.visit_id == "V777"


def test_local_times_use_the_hospital_zone_and_offsets_win() -> None:
    vienna = ZoneInfo("Europe/Vienna")
    local = hl7_adt.to_event(hl7_adt.parse_message(adt("A03", evn="20260301115500")), vienna)
    assert local.discharged_at == datetime(2026, 3, 1, 10, 55, tzinfo=UTC)
    explicit = hl7_adt.to_event(hl7_adt.parse_message(adt("A03", evn="20260301115500-0500")), vienna)
    assert explicit.discharged_at == datetime(2026, 3, 1, 16, 55, tzinfo=UTC)


def test_timestamps_with_fractions_and_date_only() -> None:
    assert hl7_adt.parse_ts("20260301115500.25+0100") == datetime(2026, 3, 1, 10, 55, 0, 250000, tzinfo=UTC)
    assert hl7_adt.parse_ts("20260301") == datetime(2026, 3, 1, tzinfo=UTC)
    for bad in ("2026", "202603", "2026-03-01", "20261301", "abc"):
        with pytest.raises(ValueError):
            hl7_adt.parse_ts(bad)


@pytest.mark.parametrize("text,needle", [
    ("garbage", "MSH"),
    ("", "MSH"),
    (adt("A08"), "ADT^A08 is not handled"),
    (adt("A01").replace("ADT^A01^ADT_A01", "ORU^R01"), "ORU^R01"),
    (adt("A01", pid=""), "PID-3"),
    (adt("A01", pid="../etc/passwd"), "PID-3"),
    (adt("A01", evn="yesterday"), "EVN-2"),
    (adt("A01").replace("19700102", "1970x"), "PID-7"),
])
def test_malformed_or_unsupported_messages_are_rejected_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(Hl7Rejected) as info:
        hl7_adt.to_event(hl7_adt.parse_message(text))
    assert info.value.code == "AR"
    assert needle in info.value.reason


def test_reasons_never_echo_the_patient_id() -> None:
    with pytest.raises(Hl7Rejected) as info:
        hl7_adt.to_event(hl7_adt.parse_message(adt("A01", pid="SECRET/ID 42")))
    assert "SECRET" not in info.value.reason


def test_ack_echoes_the_control_id_and_carries_the_reason_escaped() -> None:
    message = hl7_adt.parse_message(adt("A01"))
    accepted = hl7.parse(hl7_adt.ack(message, "AA"))
    assert str(accepted["MSA.F1"]) == "AA" and str(accepted["MSA.F2"]) == "MSG0001"
    assert str(accepted["MSH.F9.R1.C1"]) == "ACK"
    nak = hl7.parse(hl7_adt.ack(message, "AE", "Kafka down | retry ^ later"))
    assert str(nak["MSA.F1"]) == "AE"
    assert "\\F\\" in str(nak.segment("MSA")) and len(nak.segment("MSA")) == 4


def test_ack_for_an_unparseable_message_is_still_valid_hl7() -> None:
    reply = hl7.parse(hl7_adt.ack(None, "AR", "message does not start with an MSH segment"))
    assert str(reply["MSA.F1"]) == "AR"
    assert "MSH segment" in str(reply["MSA.F3"])


def _acking_listener(seen: list[bytes], *, max_message_bytes: int = 1 << 20,
                     idle_timeout_s: float = 300.0) -> MllpListener:
    """A listener on a free port that records each block and acknowledges it with AA."""
    async def handler(block: bytes) -> bytes:
        seen.append(block)
        return hl7_adt.ack(hl7_adt.parse_message(block.decode()), "AA").encode()

    return MllpListener(handler, "127.0.0.1", 0, max_message_bytes=max_message_bytes, idle_timeout_s=idle_timeout_s)


async def test_mllp_listener_answers_each_framed_message_and_survives_bad_frames() -> None:
    seen: list[bytes] = []
    listener = _acking_listener(seen, max_message_bytes=4096)
    await listener.start()
    try:
        reader, writer = await open_hl7_connection("127.0.0.1", listener.port)
        writer.writemessage(hl7.parse(adt("A01")))
        first = await asyncio.wait_for(reader.readmessage(), 10)
        assert str(first["MSA.F1"]) == "AA"
        writer.write(b"no start block" + b"\x1c\x0d")  # not framed with <VT>
        second = await asyncio.wait_for(reader.readmessage(), 10)
        assert str(second["MSA.F1"]) == "AR"
        writer.writemessage(hl7.parse(adt("A03")))  # the connection still works
        third = await asyncio.wait_for(reader.readmessage(), 10)
        assert str(third["MSA.F1"]) == "AA"
        writer.close()
    finally:
        await listener.stop()
    assert len(seen) == 2 and b"ADT^A03" in seen[1]


async def test_admissions_and_discharges_dated_in_the_future_are_refused_before_publishing() -> None:
    """A discharge dated 2099 would leave the patient 'discharged' and every later admission
    ignored: the HIS gets AR over MLLP and 422 over HTTP, and nothing is published."""
    import httpx

    from his.adapter import HisAdapter
    from his.auth import ApiKeys, key_digest, new_key
    from his.hl7_adt import build_adt
    from his.http import create_http_app

    published: list[object] = []

    async def sink(event: object, *, partition: int | None = None) -> None:
        published.append(event)

    adapter = HisAdapter(sink)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    reply = hl7.parse((await adapter.handle_hl7(build_adt("A03", "P-9", future, "F-1").encode())).decode())
    assert str(reply["MSA.F1"]) == "AR" and "in the future" in str(reply["MSA.F3"])
    key = new_key()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_http_app(adapter, ApiKeys({"t": key_digest(key)}))),
                                 base_url="http://his", headers={"Authorization": f"Bearer {key}"}) as client:
        refused = await client.post("/v1/admissions", content=b'{"patient_id": "P-9", "admitted_at": "2099-01-01T00:00:00Z"}')
        assert refused.status_code == 422 and "in the future" in refused.json()["error"]
    assert published == []
    now = datetime.now(UTC)
    reply = hl7.parse((await adapter.handle_hl7(build_adt("A01", "P-9", now, "F-2").encode())).decode())
    assert str(reply["MSA.F1"]) == "AA" and len(published) == 1  # a real one still goes through


@pytest.mark.parametrize("oversize", [6_000, 300_000], ids=["in-one-read", "longer-than-the-buffer"])
async def test_an_oversize_message_gets_one_ar_and_the_next_answer_is_the_next_messages(oversize: int) -> None:
    """Seen: after an oversize message the ACKs on that connection stayed one behind (its tail
    was answered as a second, invalid block), so a valid A03 got a stale AR."""
    seen: list[bytes] = []
    listener = _acking_listener(seen, max_message_bytes=4096)
    await listener.start()
    try:
        reader, writer = await open_hl7_connection("127.0.0.1", listener.port)
        writer.writeblock((adt("A01") + "\rNTE|1||" + "x" * oversize).encode())
        writer.writemessage(hl7.parse(adt("A03")))
        await writer.drain()
        first = await asyncio.wait_for(reader.readmessage(), 10)
        second = await asyncio.wait_for(reader.readmessage(), 10)
        assert str(first["MSA.F1"]) == "AR" and "larger than 4096" in str(first["MSA.F3"])
        assert str(second["MSA.F1"]) == "AA" and str(second["MSA.F2"]) == "MSG0001"
        writer.close()
    finally:
        await listener.stop()
    assert len(seen) == 1 and b"ADT^A03" in seen[0]


async def test_an_idle_mllp_connection_is_closed() -> None:
    listener = _acking_listener([], idle_timeout_s=0.3)
    await listener.start()
    try:
        reader, writer = await open_hl7_connection("127.0.0.1", listener.port)
        writer.writemessage(hl7.parse(adt("A01")))
        assert str((await asyncio.wait_for(reader.readmessage(), 10))["MSA.F1"]) == "AA"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up after 0.3 s idle
        writer.close()
    finally:
        await listener.stop()


def test_a_resent_hl7_message_becomes_the_same_event() -> None:
    """Kafka down: the HIS gets AE and resends; the first attempt may still reach Kafka. Both
    copies carry one event id, so the duplicate is recognisable (and its effect idempotent)."""
    first = hl7_adt.to_event(hl7_adt.parse_message(adt("A01")))
    again = hl7_adt.to_event(hl7_adt.parse_message(adt("A01")))
    other = hl7_adt.to_event(hl7_adt.parse_message(adt("A01").replace("|MSG0001|", "|MSG0002|")))
    elsewhere = hl7_adt.to_event(hl7_adt.parse_message(adt("A01").replace("|HIS|HOSP|", "|LAB|HOSP|")))
    assert first.event_id == again.event_id
    assert len({first.event_id, other.event_id, elsewhere.event_id}) == 3
