"""Wiring: one object holding the catalog, the object store and the services built on them,
opened inside the running event loop (agents, CLI, demo and bench all use it)."""

from __future__ import annotations

import asyncio
import os
import socket
import weakref
from dataclasses import dataclass
from datetime import timedelta

from pymongo import AsyncMongoClient

from catalog.db import connect, database
from catalog.indexes import ensure_indexes
from catalog.lease import Lease
from catalog.repository import Catalog
from catalog.tiering import TierPolicy
from slidestream.settings import Settings
from storage.events import EventSink
from storage.export import ExportService
from storage.faults import FaultInjector
from storage.mover import TierMover
from storage.objects import ObjectStore
from storage.retrieval import RetrievalService
from storage.retry import with_retries
from storage.save import SaveService
from storage.scheduler import TierScheduler
from storage.upscale import UpscaleGateway

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Services:
    settings: Settings
    client: AsyncMongoClient
    catalog: Catalog
    store: ObjectStore
    saver: SaveService
    mover: TierMover
    scheduler: TierScheduler
    retrieval: RetrievalService
    exporter: ExportService
    sweep_lease: Lease

    async def close(self) -> None:
        await self.client.close()
        self.store.close()


async def open_services(settings: Settings, sink: EventSink, *, gateway: UpscaleGateway | None = None,
                        indexes: bool = True) -> Services:
    client = connect(settings.mongo)
    db = database(client, settings.mongo)
    if indexes:
        await with_retries(lambda: ensure_indexes(db), what="catalog indexes")
    catalog = Catalog(db)
    store = ObjectStore(settings.storage)
    tiering = settings.tiering
    mover = TierMover(catalog, store, sink, faults=FaultInjector(tiering.fault_at),
                      lease_ttl=timedelta(seconds=tiering.move_lease_s))
    scheduler = TierScheduler(catalog, mover, TierPolicy.from_settings(tiering), batch=tiering.sweep_batch,
                              stale_after=timedelta(seconds=tiering.stale_move_s))
    return Services(
        settings=settings, client=client, catalog=catalog, store=store,
        saver=SaveService(catalog, store, sink), mover=mover, scheduler=scheduler,
        retrieval=RetrievalService(catalog, store, gateway, timeout_s=tiering.upscale_timeout_s),
        exporter=ExportService(catalog, store, gateway),
        sweep_lease=Lease(db, "tier-sweep", WORKER_ID, timedelta(seconds=max(60.0, 3 * tiering.sweep_interval_s))),
    )


class LazyServices:
    """Opens ``Services`` on first use inside the worker's event loop (agents register
    before the loop runs). ``for_app`` gives every agent module of one Faust app the same
    instance, so a worker holds one database client and one S3 client pool."""

    _by_app: "weakref.WeakKeyDictionary[object, LazyServices]" = weakref.WeakKeyDictionary()

    @classmethod
    def for_app(cls, app: object, settings: Settings) -> "LazyServices":
        from storage.events import FaustSink

        holder = cls._by_app.get(app)
        if holder is None:
            holder = cls._by_app[app] = cls(settings, FaustSink(app))
        return holder

    def __init__(self, settings: Settings, sink: EventSink) -> None:
        self._settings = settings
        self._sink = sink
        self._services: Services | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> Services:
        if self._services is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._services is None:
                    self._services = await open_services(self._settings, self._sink)
        return self._services
