"""``slidestream his``: run the MLLP listener and the HTTP endpoint until interrupted."""

from __future__ import annotations

import asyncio

import structlog
import uvicorn
from aiokafka import AIOKafkaProducer

from core.kafka import KafkaSink, new_producer
from core.retry import with_retries
from core.settings import Settings
from his.adapter import HisAdapter
from his.auth import ApiKeys
from his.http import create_http_app
from his.mllp import MllpListener, server_tls_context

log = structlog.get_logger(__name__)


async def _producer(settings: Settings) -> AIOKafkaProducer:
    async def start() -> AIOKafkaProducer:
        producer = new_producer(settings, principal="his", request_timeout_ms=10_000)
        try:
            await producer.start()
        except Exception:
            await producer.stop()
            raise ConnectionError("Kafka not reachable") from None
        return producer

    return await with_retries(start, what="kafka producer")


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    producer = await _producer(settings)
    adapter = HisAdapter(KafkaSink(producer))
    his = settings.his
    tls = (server_tls_context(his.mllp_tls_cert, his.mllp_tls_key, his.mllp_tls_client_ca)
           if his.mllp_tls_cert is not None and his.mllp_tls_key is not None else None)
    mllp = MllpListener(adapter.handle_hl7, settings.his.host, settings.his.mllp_port,
                        max_message_bytes=settings.his.max_message_bytes,
                        idle_timeout_s=settings.his.mllp_idle_timeout_s,
                        allowed_peers=settings.his.allowed_networks(), tls=tls)
    keys = ApiKeys.from_settings(settings)
    http = uvicorn.Server(uvicorn.Config(create_http_app(adapter, keys), host=settings.his.host,
                                         port=settings.his.http_port, log_level="warning", access_log=False, log_config=None))
    await mllp.start()
    http_task = asyncio.create_task(http.serve(), name="his-http")
    log.info("his.listening", mllp=f"{settings.his.host}:{mllp.port}",
             http=f"{settings.his.host}:{settings.his.http_port}",
             mllp_allowed=list(settings.his.mllp_allowed_peers), senders=list(keys.senders))
    mllp_mode = ("TLS, client certificate required" if his.mllp_tls_client_ca is not None
                 else "TLS" if tls is not None else "plain TCP")
    print(f"HIS adapter: HL7 MLLP ({mllp_mode}) on {settings.his.host}:{mllp.port} "
          f"(peers allowed: {', '.join(settings.his.mllp_allowed_peers)}), "
          f"HTTP on http://{settings.his.host}:{settings.his.http_port} "
          "(Authorization: Bearer <key>; `slidestream his key` shows the install's key)", flush=True)
    if ready is not None:
        ready.set()
    try:
        await http_task
    finally:
        http.should_exit = True
        await mllp.stop()
        await producer.stop()
