"""Wiring: one object holding the catalog, the object store and the services built on them,
opened inside the running event loop (agents, CLI, demo and bench all use it; the agents
share one per Faust app through ``agents.storage_services``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from pymongo import AsyncMongoClient

from catalog.db import connect, database
from catalog.indexes import ensure_indexes
from catalog.lease import Lease
from catalog.repository import Catalog
from catalog.tiering import TierPolicy
from core.kafka import EventSink
from core.retry import with_retries
from core.settings import Settings
from core.upscale_client import UpscaleGateway
from storage.export import ExportService
from storage.faults import FaultInjector
from storage.mover import TierMover
from storage.objects import ObjectStore
from storage.retrieval import RetrievalService
from storage.save import SaveService
from storage.scheduler import TierScheduler

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
