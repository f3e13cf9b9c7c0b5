"""MLLP (Minimal Lower Layer Protocol) listener: HL7 messages framed ``<VT> ... <FS><CR>``
over TCP, one acknowledgement per message, using python-hl7's asyncio streams.

MLLP carries no credentials, so hospitals restrict it by network: the listener accepts only
peers in its allow-list (``settings.his.mllp_allowed_peers``, loopback by default) and closes
any other connection before reading a byte of it. It can also run over TLS, optionally
requiring a client certificate from a given CA (``server_tls_context``)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import hl7
import structlog
from hl7.mllp import open_hl7_connection, start_hl7_server

from his import hl7_adt

log = structlog.get_logger(__name__)

Handler = Callable[[bytes], Awaitable[bytes]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_ONLY: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))


def server_tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2+ for the listener; with ``client_ca``, a client certificate signed by it is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls_context(ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """TLS for a sender: the listener's certificate is verified (against ``ca``, else the system's
    CAs); ``cert``/``key`` is the sender's own certificate when the listener asks for one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"


class MllpListener:
    def __init__(self, handler: Handler, host: str, port: int, *, max_message_bytes: int = 1 << 20,
                 idle_timeout_s: float = 300.0, allowed_peers: Sequence[Network] = LOOPBACK_ONLY,
                 tls: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._allowed = tuple(allowed_peers)
        self._tls = tls
        self._host = host
        self._port = port
        self._limit = max_message_bytes
        self._idle_timeout = idle_timeout_s
        self._server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await start_hl7_server(self._serve, self._host, self._port, limit=self._limit, ssl=self._tls,
                                              ssl_handshake_timeout=30.0 if self._tls is not None else None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _next_block(self, reader: asyncio.StreamReader) -> bytes | str:
        """The next block's content, or why it is refused. An oversize block is read to its
        end and refused once, so the next answer belongs to the next message (python-hl7's
        own reader refuses it, then refuses its tail as a second, invalid block)."""
        oversize = False
        while True:
            try:
                block = await reader.readuntil(END_BLOCK)
            except asyncio.LimitOverrunError as exc:
                # asyncio says whether the end marker is already in its buffer; only its words tell.
                found = "is found" in str(exc)
                await reader.readexactly(exc.consumed + (len(END_BLOCK) if found else 0))
                if found:
                    return f"message larger than {self._limit} bytes"
                oversize = True  # the rest of it is still arriving: skip to its end marker
                continue
            if oversize:
                return f"message larger than {self._limit} bytes"
            if not block.startswith(START_BLOCK):
                return "MLLP block does not start with <VT>"
            return block[len(START_BLOCK):-len(END_BLOCK)]

    def allows(self, address: str) -> bool:
        """Whether a peer at ``address`` may send (an IPv4-mapped IPv6 address counts as IPv4)."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._allowed)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.allows(address):
            log.warning("his.mllp_peer_refused", peer=address or "unknown")  # the address only
            writer.transport.abort()  # closed unread: nothing of the message is parsed or acknowledged
            return
        try:
            while True:
                try:
                    block = await asyncio.wait_for(self._next_block(reader), self._idle_timeout)
                except asyncio.IncompleteReadError:
                    return  # the sender closed the connection
                except TimeoutError:
                    log.info("his.mllp_idle_closed", peer=str(peer), idle_s=self._idle_timeout)
                    return
                if isinstance(block, str):
                    reply = hl7_adt.ack(None, "AR", block).encode()
                else:
                    reply = await self._handler(block)
                writer.writeblock(reply)  # type: ignore[attr-defined]  # python-hl7 stream writer
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.info("his.mllp_connection_lost", peer=str(peer), error=type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def send_message(host: str, port: int, message: str, *, timeout_s: float = 30.0,
                       tls: ssl.SSLContext | None = None) -> hl7.Message:
    """Send one framed HL7 message and return the acknowledgement (``MSA-1``: AA, AE or AR)."""
    reader, writer = await asyncio.wait_for(open_hl7_connection(host, port, ssl=tls), timeout_s)
    try:
        writer.writeblock(message.encode())
        await writer.drain()
        return await asyncio.wait_for(reader.readmessage(), timeout_s)
    finally:
        writer.close()

