"""MLLP over TLS with client certificates (mutual TLS), on real sockets with certificates made
by the openssl command: a sender with a certificate from the configured CA is served; one
without a certificate, with another CA's certificate, or speaking plain TCP is not, and nothing
it sent reaches the handler."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import HisSettings
from his.hl7_adt import ack, build_adt, parse_message
from his.mllp import MllpListener, client_tls_context, send_message, server_tls_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}", cwd=directory)


def _issued(directory: Path, ca: str, name: str, extension: str) -> None:
    (directory / f"{name}.ext").write_text(extension + "\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=directory)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    _ca(directory, "hospital-ca")
    _ca(directory, "other-ca")
    _issued(directory, "hospital-ca", "listener", "subjectAltName=IP:127.0.0.1")
    _issued(directory, "hospital-ca", "his", "extendedKeyUsage=clientAuth")
    _issued(directory, "other-ca", "intruder", "extendedKeyUsage=clientAuth")
    return directory


async def _tls_listener(pki: Path, seen: list[bytes]) -> MllpListener:
    async def handler(block: bytes) -> bytes:
        seen.append(block)
        return ack(parse_message(block.decode()), "AA").encode()

    tls = server_tls_context(pki / "listener.pem", pki / "listener.key", pki / "hospital-ca.pem")
    listener = MllpListener(handler, "127.0.0.1", 0, tls=tls)
    await listener.start()
    return listener


def _message() -> str:
    return build_adt("A01", "P-77", datetime.now(UTC), "TLS-1")


async def test_a_sender_with_a_certificate_from_the_hospital_ca_is_served(pki: Path) -> None:
    seen: list[bytes] = []
    listener = await _tls_listener(pki, seen)
    try:
        tls = client_tls_context(pki / "hospital-ca.pem", pki / "his.pem", pki / "his.key")
        reply = await send_message("127.0.0.1", listener.port, _message(), tls=tls, timeout_s=10)
        assert str(reply["MSA.F1"]) == "AA" and len(seen) == 1
    finally:
        await listener.stop()


@pytest.mark.parametrize("client", ["no certificate", "another CA's certificate", "plain TCP"])
async def test_other_senders_are_refused_before_their_message_is_read(pki: Path, client: str) -> None:
    seen: list[bytes] = []
    listener = await _tls_listener(pki, seen)
    try:
        if client == "plain TCP":
            tls = None
        elif client == "no certificate":
            tls = client_tls_context(pki / "hospital-ca.pem")
        else:
            tls = client_tls_context(pki / "hospital-ca.pem", pki / "intruder.pem", pki / "intruder.key")
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, TimeoutError)):
            await send_message("127.0.0.1", listener.port, _message(), tls=tls, timeout_s=5)
        await asyncio.sleep(0.2)
        assert seen == []
    finally:
        await listener.stop()


def test_tls_settings_come_in_pairs(pki: Path) -> None:
    with pytest.raises(ValidationError):
        HisSettings(mllp_tls_cert=pki / "listener.pem")
    with pytest.raises(ValidationError):
        HisSettings(mllp_tls_client_ca=pki / "hospital-ca.pem")
    HisSettings(mllp_tls_cert=pki / "listener.pem", mllp_tls_key=pki / "listener.key",
                mllp_tls_client_ca=pki / "hospital-ca.pem")
