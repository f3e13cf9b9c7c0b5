"""HIS entry points authenticate: the JSON endpoint wants a sender key (401 otherwise, nothing
published, no key or patient data logged); MLLP accepts only allow-listed peers."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from datetime import UTC, datetime

import httpx
import pytest
import structlog
from pydantic import ValidationError

from core.settings import HisSettings, Settings
from his.adapter import HisAdapter
from his.auth import ApiKeys, install_key, key_digest, key_file, new_key
from his.hl7_adt import build_adt
from his.http import create_http_app
from his.mllp import MllpListener, send_message

ADMISSION = {"patient_id": "P-4711", "admitted_at": "2026-03-01T08:00:00Z", "ward": "W3",
             "identity": {"family_name": "Secretname"}}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SLIDESTREAM_"):
            monkeypatch.delenv(key)


def _collecting_adapter() -> tuple[HisAdapter, list[object]]:
    published: list[object] = []

    async def sink(event: object, *, partition: int | None = None) -> None:
        published.append(event)

    return HisAdapter(sink), published


def test_the_install_key_is_private_stable_and_unique(tmp_path, clean_env) -> None:
    first = Settings(_env_file=None, state_dir=tmp_path / "a")
    second = Settings(_env_file=None, state_dir=tmp_path / "b")
    key = install_key(first)
    assert key == install_key(first) and key != install_key(second)
    assert len(key) == 43
    assert stat.S_IMODE(key_file(first).stat().st_mode) == 0o600
    assert ApiKeys.from_settings(first).sender(f"Bearer {key}") == "local"
    assert ApiKeys.from_settings(second).sender(f"Bearer {key}") is None


def test_configured_sender_keys_replace_the_install_key(tmp_path, clean_env, monkeypatch) -> None:
    epic, lab = new_key(), new_key()
    monkeypatch.setenv("SLIDESTREAM_HIS__API_KEYS", json.dumps({"epic": key_digest(epic), "lab-system": key_digest(lab)}))
    settings = Settings(_env_file=None, state_dir=tmp_path)
    keys = ApiKeys.from_settings(settings)
    assert keys.sender(f"Bearer {epic}") == "epic" and keys.sender(f"bearer  {lab} ") == "lab-system"
    assert keys.sender(f"Bearer {install_key(settings)}") is None
    for bad in (None, "", "Bearer", "Bearer ", epic, f"Basic {epic}", f"Bearer {epic}x", f"Bearer {key_digest(epic)}"):
        assert keys.sender(bad) is None, bad


def test_settings_take_only_digests_and_networks_and_never_echo_them() -> None:
    key = new_key()
    with pytest.raises(ValidationError) as raw_key:
        HisSettings(api_keys={"epic": key})  # the key itself instead of its digest
    assert key not in str(raw_key.value)
    with pytest.raises(ValidationError):
        HisSettings(api_keys={"bad sender": key_digest(key)})
    with pytest.raises(ValidationError) as network:
        HisSettings(mllp_allowed_peers=("10.1.2.0/24", "hospital.example"))
    assert "hospital.example" not in str(network.value)
    assert [str(n) for n in HisSettings().allowed_networks()] == ["127.0.0.1/32", "::1/128"]


async def test_json_endpoint_wants_a_sender_key() -> None:
    """Failed before: any caller could publish admissions and discharges."""
    adapter, published = _collecting_adapter()
    key = new_key()
    app = create_http_app(adapter, ApiKeys({"epic": key_digest(key)}))
    body = json.dumps(ADMISSION)
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://his") as client:
            missing = await client.post("/v1/admissions", content=body)
            wrong = await client.post("/v1/admissions", content=body, headers={"Authorization": f"Bearer {new_key()}"})
            basic = await client.post("/v1/discharges", content=body, headers={"Authorization": f"Basic {key}"})
            assert (missing.status_code, wrong.status_code, basic.status_code) == (401, 401, 401)
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert published == []
            ok = await client.post("/v1/admissions", content=body, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 202 and len(published) == 1
            assert (await client.get("/health")).status_code == 200  # health stays open, says nothing
    logged = repr(logs)
    assert "his.http_unauthorized" in logged
    for secret in (key, "P-4711", "Secretname"):
        assert secret not in logged
    assert "Secretname" not in missing.text + wrong.text


async def test_mllp_refuses_a_peer_outside_the_allow_list_unread() -> None:
    """127.0.0.2 is loopback too on Linux, but not in an allow-list of 127.0.0.1/32."""
    import ipaddress

    seen: list[bytes] = []

    async def handler(block: bytes) -> bytes:
        seen.append(block)
        adapter, _ = _collecting_adapter()
        return await adapter.handle_hl7(block)

    listener = MllpListener(handler, "127.0.0.1", 0, allowed_peers=[ipaddress.ip_network("127.0.0.1/32")])
    await listener.start()
    message = build_adt("A01", "P-4711", datetime.now(UTC), "ALLOW-1")
    try:
        with structlog.testing.capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, local_addr=("127.0.0.2", 0))
            writer.write(b"\x0b" + message.encode() + b"\x1c\x0d")
            await writer.drain()
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await asyncio.wait_for(reader.readexactly(1), 10)
            writer.close()
            await asyncio.sleep(0.1)
        assert seen == []
        refused = [entry for entry in logs if entry["event"] == "his.mllp_peer_refused"]
        assert refused and refused[0]["peer"] == "127.0.0.2"
        assert "P-4711" not in repr(logs)

        reply = await send_message("127.0.0.1", listener.port, message)  # an allowed peer is served
        assert str(reply["MSA.F1"]) == "AA" and len(seen) == 1
    finally:
        await listener.stop()


def test_allow_list_matching() -> None:
    import ipaddress

    listener = MllpListener(lambda _: None, "127.0.0.1", 0,  # type: ignore[arg-type,return-value]
                            allowed_peers=[ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("::1/128")])
    assert listener.allows("10.20.3.4") and listener.allows("::ffff:10.20.3.4") and listener.allows("::1")
    assert not listener.allows("10.21.0.1") and not listener.allows("127.0.0.1") and not listener.allows("")
    assert MllpListener(lambda _: None, "127.0.0.1", 0).allows("127.0.0.1")  # type: ignore[arg-type,return-value]


def test_his_key_command_prints_the_key_the_endpoint_accepts(tmp_path, clean_env, monkeypatch, capsys) -> None:
    from core.settings import get_settings
    from slidestream.cli import main

    monkeypatch.setenv("SLIDESTREAM_STATE_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert main(["his", "key"]) == 0
        shown = capsys.readouterr().out.strip()
        assert ApiKeys.from_settings(get_settings()).sender(f"Bearer {shown}") == "local"
        assert main(["his", "key", "--new", "epic"]) == 0
        out, err = capsys.readouterr()
        assert key_digest(out.strip()) in err and out.strip() != shown
        monkeypatch.setenv("SLIDESTREAM_HIS__API_KEYS", json.dumps({"epic": key_digest(out.strip())}))
        get_settings.cache_clear()
        assert main(["his", "key"]) == 1  # configured senders: the install key is not accepted, not shown
        assert shown not in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
