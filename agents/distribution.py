"""Distribution agent (SPEC 2, issue 12): new exams to reading terminals. Logic in
``distribution.service``.

* ``slide.stored`` -> the exam's assignment (created or the slide added), ``distribution.assigned``;
* ``distribution.assigned`` -> pre-computation of the exam's missing SR tiles at distribution
  priority; an event the catalog does not back is dead-lettered (``ForgedAssignment``);
* timer every ``distribution.sweep_interval_s``: one worker (catalog lease) finishes reported
  exams, takes silent terminals offline and moves their exams, and places waiting exams.
"""

from __future__ import annotations

import asyncio
from functools import partial

import faust
import structlog

from agents.event_processing import process
from agents.messaging import FaustSink, decode, raw_topic
from agents.storage_services import LazyServices
from core.settings import Settings
from distribution.policy import PolicySource
from distribution.service import DistributionService
from schemas.events import DistributionAssigned, SlideStored
from schemas.topics import Topic

log = structlog.get_logger(__name__)


class LazyDistribution:
    """The service, built on the worker's shared storage services on first use."""

    def __init__(self, app: faust.App, settings: Settings, policy: PolicySource) -> None:
        self._services = LazyServices.for_app(app, settings)
        self._sink = FaustSink(app)
        self._settings = settings
        self._policy = policy
        self._service: DistributionService | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> DistributionService:
        if self._service is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._service is None:
                    svc = await self._services.get()
                    self._service = DistributionService(svc.catalog.db, svc.store, self._sink, self._settings,
                                                        self._policy)
        return self._service


def register(app: faust.App, settings: Settings) -> None:
    # Read now: a policy file that cannot be used stops the worker at start (PolicyError).
    policy = PolicySource(settings.distribution.policy_file)
    distribution = LazyDistribution(app, settings, policy)

    @app.agent(raw_topic(app, Topic.SLIDE_STORED.value), name="distribution-stored")
    async def on_stored(stream: faust.StreamT) -> None:
        async for event in stream.events():
            stored = await decode(app, event.message)
            if not isinstance(stored, SlideStored):
                continue
            service = await distribution.get()
            await process(app, event.message, partial(service.on_stored, stored), what="distribute exam")

    @app.agent(raw_topic(app, Topic.DISTRIBUTION_ASSIGNED.value), name="distribution-precompute")
    async def on_assigned(stream: faust.StreamT) -> None:
        async for event in stream.events():
            assigned = await decode(app, event.message)
            if not isinstance(assigned, DistributionAssigned):
                continue
            service = await distribution.get()
            await process(app, event.message, partial(service.precompute, assigned), what="pre-compute exam")

    @app.timer(interval=settings.distribution.sweep_interval_s, name="distribution-sweep")
    async def sweep() -> None:
        try:
            await (await distribution.get()).run_sweep()
        except Exception as exc:  # noqa: BLE001 - an outage skips one run; the next timer retries
            log.warning("distribution_sweep.failed", error=type(exc).__name__, detail=str(exc)[:200])
