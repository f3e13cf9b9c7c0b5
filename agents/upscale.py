"""Upscale agent: ``upscale.requested`` -> compute engine -> hr-cache + ``upscale.done``/``failed``;
``upscale.cancelled`` drops tiles a viewer no longer needs before they are computed.

Thin by design: the agent validates each message and hands it to the engine
(``compute.engine``), which orders work by priority, batches, and preempts. A message is
acknowledged - and its offset becomes committable - only when the engine has answered
every tile of the request (at-least-once; a redelivered request finds its tiles in the
hr-cache). Messages are read from all partitions of the topic; ``compute.gate`` pauses a
priority class's partitions while this worker already holds enough of that class, and
keeps them paused across Faust's rebalances.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import faust
import structlog
from faust.types import TP
from mode import Service

from agents.messaging import decode, publish, raw_topic
from compute.engine import ComputeEngine
from compute.gate import PartitionGate, PrefetchPolicy
from compute.runtime import ComputeRuntime, open_runtime, prefetch_limits
from compute.upscaler import Upscaler
from core.settings import Settings
from schemas.events import Event, UpscaleCancelled, UpscaleRequested
from schemas.topics import Priority, Topic, priority_of_partition

log = structlog.get_logger(__name__)

STOP_GRACE_S = 60.0  # on shutdown, the running batch may finish (its leases are then dropped)
SUBMIT_RETRY_S = 2.0
FETCH_MAX_WAIT_MS = 50  # see _shorten_fetch_wait


class UpscaleService(Service):
    """Owns the engine's lifetime inside the Faust worker."""

    def __init__(self, app: faust.App, settings: Settings, *, upscaler: Upscaler | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        self._upscaler = upscaler
        self.gate = PartitionGate(Topic.UPSCALE_REQUESTED.value, PrefetchPolicy(prefetch_limits(settings)),
                                  make_tp=TP, is_rebalancing=lambda: bool(self.app.rebalancing))
        self.runtime: ComputeRuntime | None = None
        self._engine_task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def _publish(self, event: Event) -> None:
        await publish(self.app, event.topic.value, event, key=event.kafka_key())

    async def on_start(self) -> None:
        self.gate.attach(self.app.consumer)
        _shorten_fetch_wait(self.app, FETCH_MAX_WAIT_MS)
        self.runtime = await open_runtime(self.settings, self._publish, upscaler=self._upscaler,
                                          on_backlog=self.gate.on_backlog)
        self._engine_task = asyncio.create_task(self.runtime.engine.run(), name="upscale-engine")
        self._ready.set()
        log.info("upscale.started", worker=self.runtime.engine.worker_id, model=self.runtime.engine.upscaler.name)

    async def on_stop(self) -> None:
        if self.runtime is None:
            return
        self.runtime.engine.stop()
        if self._engine_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._engine_task), STOP_GRACE_S)
            except (TimeoutError, asyncio.CancelledError):
                self._engine_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._engine_task
        await self.runtime.close()

    async def engine(self) -> ComputeEngine:
        await self._ready.wait()
        assert self.runtime is not None
        return self.runtime.engine

    async def handle(self, event: faust.EventT) -> None:
        message = event.message
        request = await decode(self.app, message)
        if request is None:  # dead-lettered with its reason
            event.ack()
            return
        assert isinstance(request, UpscaleRequested)
        with contextlib.suppress(ValueError):
            partition_class = priority_of_partition(message.partition)
            if partition_class is not Priority(request.priority):
                # The request's own priority decides; the partition only decides fetch order.
                log.warning("upscale.priority_mismatch", request_id=str(request.request_id),
                            partition=message.partition, priority=Priority(request.priority).value)
        engine = await self.engine()
        while True:
            try:
                await engine.submit(request, on_finished=event.ack, source=message.tp)
                return
            except Exception as exc:  # noqa: BLE001 - broker/storage hiccup: keep the message, retry
                log.error("upscale.submit_failed", request_id=str(request.request_id),
                          error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(SUBMIT_RETRY_S)

    async def handle_cancel(self, event: faust.EventT) -> None:
        cancel = await decode(self.app, event.message)
        if cancel is None:  # dead-lettered with its reason
            return
        assert isinstance(cancel, UpscaleCancelled)
        engine = await self.engine()
        await engine.cancel(cancel)


def _shorten_fetch_wait(app: faust.App, wait_ms: int) -> None:
    """Faust builds its aiokafka consumer with fetch_max_wait_ms=1500 and offers no setting.
    aiokafka keeps one fetch in flight per broker, built without the partitions whose
    records were still buffered at that moment; a request landing on such a partition
    (typically the interactive one, right after its previous request) waits for that fetch
    to return: up to 1.5 s added to a viewer's wait. The fetcher reads the value on every
    request, so it can be lowered once the consumer exists."""
    fetcher = getattr(getattr(getattr(getattr(app.consumer, "_thread", None), "_consumer", None), "_fetcher", None),
                      "_fetch_max_wait_ms", None)
    if fetcher is None:
        log.warning("upscale.fetch_wait_unchanged", reason="faust/aiokafka internals differ")
        return
    app.consumer._thread._consumer._fetcher._fetch_max_wait_ms = wait_ms  # noqa: SLF001 - Faust hard-codes the fetch wait (see the docstring)


def register(app: faust.App, settings: Settings, *, upscaler: Upscaler | None = None) -> UpscaleService:
    service = UpscaleService(app, settings, upscaler=upscaler)
    app.service(service)  # type: ignore[arg-type] - faust accepts an instance as well as a class

    @app.on_partitions_assigned.connect
    async def hand_over(sender: faust.App, assigned: set[TP], **_: Any) -> None:
        # Queued requests of partitions that are no longer ours go to their new owner
        # (unacknowledged, so it gets them) instead of being computed here too. Judged on
        # the new assignment, not on the revocation: the eager protocol revokes everything
        # at each rebalance and most partitions come straight back. With Faust's default
        # stream_wait_empty nothing of ours is left by now; compute workers turn it off.
        if service.runtime is not None:
            engine = service.runtime.engine
            engine.drop_sources({source for source in engine.known_sources() if source not in assigned})

    @app.agent(raw_topic(app, Topic.UPSCALE_REQUESTED.value), name="upscale")
    async def upscale(stream: faust.StreamT) -> None:
        # Manual acks: a request is acknowledged when its last tile is answered.
        async for event in stream.noack().events():
            await service.handle(event)

    # Co-partitioned with upscale.requested (same partition count, same subscribers), so a
    # cancel sent to its request's partition number is read by the worker holding it.
    @app.agent(raw_topic(app, Topic.UPSCALE_CANCELLED.value), name="upscale-cancel")
    async def upscale_cancel(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await service.handle_cancel(event)

    return service
