"""Readiness probes that make a real request to each server (an open port is not enough)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from pydantic import SecretStr

from core.settings import Settings

PROBE_TIMEOUT_S = 3.0


async def tcp_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (TimeoutError, OSError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def kafka_ready(settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """The broker authenticates the broker's own principal, answers a metadata request and
    lists itself."""
    # Checking the port first keeps aiokafka from logging connection errors while we wait.
    if not await tcp_open(settings.kafka.host, settings.kafka.port):
        return False
    from aiokafka.errors import KafkaError

    from core.kafka import new_admin

    admin = new_admin(settings, principal="admin", request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return bool(cluster.get("brokers"))
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


def _http_ok(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - our own URL
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def minio_ready(host: str, port: int, secure: bool = False,
                      timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """MinIO's readiness endpoint answers 200 (the object layer can serve requests)."""
    scheme = "https" if secure else "http"
    return await asyncio.to_thread(_http_ok, f"{scheme}://{host}:{port}/minio/health/ready", timeout_s)


async def mongo_ready(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S, *,
                      credentials: tuple[str, SecretStr] | None = None) -> bool:
    """The server answers a MongoDB `ping` command (signed in with ``credentials``, if given)."""
    if not await tcp_open(host, port):
        return False
    from pymongo import AsyncMongoClient
    from pymongo.errors import PyMongoError

    timeout_ms = int(timeout_s * 1000)
    client: AsyncMongoClient = AsyncMongoClient(
        host, port, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
        directConnection=True,
        **({"username": credentials[0], "password": credentials[1].get_secret_value(), "authMechanism": "PLAIN"}
           if credentials else {}),
    )
    try:
        reply = await client.admin.command("ping")
        return reply.get("ok") == 1
    except PyMongoError:
        return False
    finally:
        await client.close()
