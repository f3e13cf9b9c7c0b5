"""The HIS adapter against real Kafka: HL7 over MLLP and JSON over HTTP become events; an ACK
means the event is in Kafka; malformed input is refused with a reason and publishes nothing;
with Kafka down the HIS gets AE / 503 and can resend. The JSON endpoint wants a sender key and
MLLP serves only allow-listed peers (`slidestream his` as it runs: `serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator

import hl7
import httpx
import pytest

from core.kafka import KafkaSink, new_producer, tail_from_end, wait_for
from core.settings import Settings
from his.adapter import HisAdapter
from his.auth import ApiKeys, install_key, key_digest, new_key
from his.http import create_http_app
from his.mllp import MllpListener, send_message
from infra import stack as local_stack
from schemas.events import PatientAdmitted, PatientDischarged
from schemas.topics import Topic
from tests.integration.test_tier_services import matching
from tests.integration.tierkit import uid

pytestmark = pytest.mark.integration


def adt(trigger: str, patient: str, control: str = "C1") -> str:
    return "\r".join([
        f"MSH|^~\\&|HIS|HOSP|SLIDESTREAM|PATH|20260301120000||ADT^{trigger}^ADT_{trigger}|{control}|P|2.5",
        f"EVN|{trigger}|20260301115500",
        f"PID|1||{patient}^^^HOSP^MR||Doe^Jane||19700102|F",
        "PV1|1|I|WARD3^101^1" + "|" * 16 + "V777",
    ])


@pytest.fixture
async def adapter(stack: Settings) -> AsyncIterator[tuple[HisAdapter, MllpListener]]:
    prod = new_producer(stack, principal="his", request_timeout_ms=5000)  # the adapter's own principal
    await prod.start()
    his = HisAdapter(KafkaSink(prod), publish_timeout_s=5.0)
    listener = MllpListener(his.handle_hl7, "127.0.0.1", 0)  # any free port: sessions run side by side
    await listener.start()
    try:
        yield his, listener
    finally:
        await listener.stop()
        await prod.stop()


async def _exchange(port: int, text: str) -> hl7.Message:
    return await send_message("127.0.0.1", port, text)


KEY = new_key()


def _json_client(his: HisAdapter, key: str | None = KEY) -> httpx.AsyncClient:
    """The JSON endpoint (in process) accepting sender "test-his" with KEY; the client shows ``key``."""
    app = create_http_app(his, ApiKeys({"test-his": key_digest(KEY)}))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://his", headers=headers)


async def test_admit_and_discharge_over_mllp_are_published_then_acknowledged(stack: Settings, adapter) -> None:
    _, listener = adapter
    patient = uid("P")
    async with tail_from_end(stack, Topic.PATIENT_ADMITTED.value) as admitted, \
            tail_from_end(stack, Topic.PATIENT_DISCHARGED.value) as discharged:
        reply = await _exchange(listener.port, adt("A01", patient, "A-1"))
        assert str(reply["MSA.F1"]) == "AA" and str(reply["MSA.F2"]) == "A-1"
        event = await wait_for(admitted, matching(PatientAdmitted, patient_id=patient), timeout=30)
        assert event.ward == "WARD3" and event.identity.family_name == "Doe"
        reply = await _exchange(listener.port, adt("A03", patient, "D-1"))
        assert str(reply["MSA.F1"]) == "AA"
        assert (await wait_for(discharged, matching(PatientDischarged, patient_id=patient), timeout=30)).visit_id == "V777"


async def test_malformed_hl7_gets_ar_and_publishes_nothing(stack: Settings, adapter) -> None:
    _, listener = adapter
    patient = uid("P")
    async with tail_from_end(stack, Topic.PATIENT_ADMITTED.value) as admitted:
        for bad in ("not hl7 at all", adt("A01", "bad/id"), adt("A08", patient),
                    adt("A01", patient).replace("20260301115500", "yesterday")):
            reply = await _exchange(listener.port, bad)
            assert str(reply["MSA.F1"]) == "AR" and str(reply["MSA.F3"])
        with pytest.raises(TimeoutError):
            await wait_for(admitted, matching(PatientAdmitted, patient_id=patient), timeout=3)


async def test_json_endpoint_accepts_valid_and_names_invalid_fields(stack: Settings, adapter) -> None:
    his, _ = adapter
    patient = uid("P")
    async with _json_client(his) as client, tail_from_end(stack, Topic.PATIENT_DISCHARGED.value) as discharged:
        ok = await client.post("/v1/discharges", content=json.dumps(
            {"patient_id": patient, "discharged_at": "2026-03-01T12:00:00Z", "visit_id": "V1"}))
        assert ok.status_code == 202
        event = await wait_for(discharged, matching(PatientDischarged, patient_id=patient), timeout=30)
        assert str(event.event_id) == ok.json()["event_id"]

        bad = await client.post("/v1/admissions", content=json.dumps(
            {"patient_id": patient, "admitted_at": "not a time", "identity": {"name": "Jane Secret"}}))
        assert bad.status_code == 422 and "admitted_at" in bad.json()["fields"]
        assert "Jane Secret" not in bad.text
        extra = await client.post("/v1/discharges", content=json.dumps(
            {"patient_id": patient, "discharged_at": "2026-03-01T12:00:00Z", "diagnosis": "x"}))
        assert extra.status_code == 422
        assert (await client.post("/v1/discharges", content=b"{")).status_code == 422


async def test_kafka_down_gets_ae_and_503_and_a_resend_succeeds(stack: Settings, adapter) -> None:
    his, listener = adapter
    patient = uid("P")
    await asyncio.to_thread(local_stack.down, stack, ["kafka"])
    try:
        reply = await _exchange(listener.port, adt("A03", patient, "K-1"))
        assert str(reply["MSA.F1"]) == "AE" and "Kafka" in str(reply["MSA.F3"])
        async with _json_client(his) as client:
            down = await client.post("/v1/discharges", content=json.dumps(
                {"patient_id": patient, "discharged_at": "2026-03-01T12:00:00Z"}))
            assert down.status_code == 503
    finally:
        await local_stack.up_async(stack, ["kafka"], run_bootstrap=False, timeout_s=180)
    async with tail_from_end(stack, Topic.PATIENT_DISCHARGED.value) as discharged:
        for _ in range(30):  # the HIS resends until acknowledged
            reply = await _exchange(listener.port, adt("A03", patient, "K-2"))
            if str(reply["MSA.F1"]) == "AA":
                break
            await asyncio.sleep(1)
        assert str(reply["MSA.F1"]) == "AA"
        await wait_for(discharged, matching(PatientDischarged, patient_id=patient), timeout=30)


async def test_his_send_delivers_an_admission_and_a_discharge(stack: Settings, adapter) -> None:
    """`slidestream his send` builds the ADT message, sends it over MLLP and reports the ACK."""
    from slidestream.commands.his import send_adt

    _, listener = adapter
    patient = uid("P")
    async with tail_from_end(stack, Topic.PATIENT_ADMITTED.value) as admitted, \
            tail_from_end(stack, Topic.PATIENT_DISCHARGED.value) as discharged:
        code, _ = await send_adt(stack, "A01", patient, visit_id="V9", ward="W2", host="127.0.0.1",
                                 port=listener.port)
        assert code == "AA"
        event = await wait_for(admitted, matching(PatientAdmitted, patient_id=patient), timeout=30)
        assert (event.visit_id, event.ward) == ("V9", "W2")
        assert (await send_adt(stack, "A03", patient, host="127.0.0.1", port=listener.port))[0] == "AA"
        await wait_for(discharged, matching(PatientDischarged, patient_id=patient), timeout=30)


async def test_json_endpoint_without_the_right_key_gets_401_and_publishes_nothing(stack: Settings, adapter) -> None:
    """Before issue 13 anyone who reached the port could admit and discharge patients."""
    his, _ = adapter
    patient = uid("P")
    body = json.dumps({"patient_id": patient, "discharged_at": "2026-03-01T12:00:00Z"})
    async with tail_from_end(stack, Topic.PATIENT_DISCHARGED.value) as discharged:
        for key in (None, new_key(), key_digest(KEY)):  # none, another sender's, the stored digest
            async with _json_client(his, key) as client:
                refused = await client.post("/v1/discharges", content=body)
                assert refused.status_code == 401 and patient not in refused.text
        with pytest.raises(TimeoutError):
            await wait_for(discharged, matching(PatientDischarged, patient_id=patient), timeout=3)
        async with _json_client(his) as client:
            assert (await client.post("/v1/discharges", content=body)).status_code == 202
        await wait_for(discharged, matching(PatientDischarged, patient_id=patient), timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_running_adapter_authenticates_both_entry_points(stack: Settings) -> None:
    """`slidestream his` as it runs (his.serve.serve): the JSON endpoint takes the install's own
    key (`slidestream his key`) and nothing else; MLLP closes a connection from 127.0.0.2 (not in
    an allow-list of 127.0.0.1/32) unread, and serves 127.0.0.1."""
    from his.serve import serve

    his = stack.his.model_copy(update={"mllp_port": _free_port(), "http_port": _free_port(),
                                       "mllp_allowed_peers": ("127.0.0.1/32",)})
    settings = stack.model_copy(update={"his": his})
    ready = asyncio.Event()
    server = asyncio.create_task(serve(settings, ready=ready))
    patient, outsider = uid("P"), uid("P")
    try:
        await asyncio.wait_for(ready.wait(), 60)
        url = f"http://127.0.0.1:{his.http_port}/v1/admissions"
        body = json.dumps({"patient_id": patient, "admitted_at": "2026-03-01T08:00:00Z"})
        async with httpx.AsyncClient(timeout=30) as client, \
                tail_from_end(stack, Topic.PATIENT_ADMITTED.value) as admitted:
            assert (await client.post(url, content=body)).status_code == 401
            wrong = await client.post(url, content=body, headers={"Authorization": f"Bearer {new_key()}"})
            assert wrong.status_code == 401

            reader, writer = await asyncio.open_connection("127.0.0.1", his.mllp_port, local_addr=("127.0.0.2", 0))
            writer.write(b"\x0b" + adt("A01", outsider, "OUT-1").encode() + b"\x1c\x0d")
            await writer.drain()
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await asyncio.wait_for(reader.readexactly(1), 10)
            writer.close()

            with pytest.raises(TimeoutError):
                await wait_for(admitted, matching(PatientAdmitted, patient_id=patient), timeout=3)
            ok = await client.post(url, content=body, headers={"Authorization": f"Bearer {install_key(settings)}"})
            assert ok.status_code == 202
            await wait_for(admitted, matching(PatientAdmitted, patient_id=patient), timeout=30)
            reply = await _exchange(his.mllp_port, adt("A01", uid("P"), "IN-1"))
            assert str(reply["MSA.F1"]) == "AA"
            with pytest.raises(TimeoutError):  # the refused peer's admission never reached Kafka
                await wait_for(admitted, matching(PatientAdmitted, patient_id=outsider), timeout=3)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


async def test_the_running_adapter_serves_mllp_over_mutual_tls(stack: Settings, tmp_path) -> None:
    """his.mllp_tls_* make `slidestream his` speak MLLP over TLS and require a client certificate
    from the configured CA; the CLI sender (`his send --tls-*`) gets AA, a sender without a
    certificate is disconnected and its admission never reaches Kafka."""
    from his.mllp import client_tls_context
    from his.serve import serve
    from slidestream.commands.his import send_adt
    from tests.unit.test_his_tls import _ca, _issued

    _ca(tmp_path, "hospital-ca")
    _issued(tmp_path, "hospital-ca", "listener", "subjectAltName=IP:127.0.0.1")
    _issued(tmp_path, "hospital-ca", "his", "extendedKeyUsage=clientAuth")
    his = stack.his.model_copy(update={
        "mllp_port": _free_port(), "http_port": _free_port(), "mllp_tls_cert": tmp_path / "listener.pem",
        "mllp_tls_key": tmp_path / "listener.key", "mllp_tls_client_ca": tmp_path / "hospital-ca.pem"})
    settings = stack.model_copy(update={"his": his})
    ready = asyncio.Event()
    server = asyncio.create_task(serve(settings, ready=ready))
    patient, certless = uid("P"), uid("P")
    try:
        await asyncio.wait_for(ready.wait(), 60)
        async with tail_from_end(stack, Topic.PATIENT_ADMITTED.value) as admitted:
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, TimeoutError)):
                await send_adt(settings, "A01", certless, host="127.0.0.1", port=his.mllp_port, timeout_s=5,
                               tls=client_tls_context(tmp_path / "hospital-ca.pem"))
            tls = client_tls_context(tmp_path / "hospital-ca.pem", tmp_path / "his.pem", tmp_path / "his.key")
            code, _ = await send_adt(settings, "A01", patient, host="127.0.0.1", port=his.mllp_port, tls=tls)
            assert code == "AA"
            await wait_for(admitted, matching(PatientAdmitted, patient_id=patient), timeout=30)
            with pytest.raises(TimeoutError):
                await wait_for(admitted, matching(PatientAdmitted, patient_id=certless), timeout=3)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
