"""Wiring of the compute engine to the real services (catalog, object store, leases, model).

Opened inside the running event loop; the agent, the demo and the bench all use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from catalog.db import connect, database
from catalog.repository import Catalog
from compute.engine import BacklogListener, ComputeEngine, EngineConfig, Publish
from compute.slides import CatalogSlides
from compute.tile_cache import S3TileCache
from compute.tile_leases import LEASE_COLLECTION, MongoLeases
from compute.upscaler import Upscaler, load_upscaler
from core.settings import Settings
from schemas.topics import Priority
from storage.objects import ObjectStore


def engine_config(settings: Settings) -> EngineConfig:
    c = settings.compute
    return EngineConfig(max_batch=c.max_batch, interactive_max_batch=c.interactive_max_batch, lease_ttl_s=c.lease_ttl_s,
                        max_tiles_per_request=c.max_tiles_per_request, blocks=True, max_margin=c.max_margin,
                        consistency_threshold_db=c.consistency_threshold_db)


def prefetch_limits(settings: Settings) -> dict[Priority, int]:
    c = settings.compute
    return {Priority.INTERACTIVE: c.interactive_prefetch_tiles,
            Priority.DISTRIBUTION: c.prefetch_tiles,
            Priority.BACKGROUND: c.prefetch_tiles}


@dataclass
class ComputeRuntime:
    engine: ComputeEngine
    client: Any  # AsyncMongoClient
    store: ObjectStore
    cache: S3TileCache
    slides: CatalogSlides

    async def close(self) -> None:
        await self.client.close()
        self.store.close()


async def open_runtime(settings: Settings, publish: Publish, *, upscaler: Upscaler | None = None,
                       on_backlog: BacklogListener | None = None, worker_id: str | None = None,
                       upscaler_factory: Callable[[], Upscaler] | None = None) -> ComputeRuntime:
    client = connect(settings.mongo)
    db = database(client, settings.mongo)
    leases_coll = db[LEASE_COLLECTION]
    await leases_coll.create_index("expires_at")  # the purge of expired leases
    store = ObjectStore(settings.storage)
    cache = S3TileCache.from_store(store)
    slides = CatalogSlides(Catalog(db), store)
    if upscaler is None:
        c = settings.compute
        upscaler = upscaler_factory() if upscaler_factory else load_upscaler(c.model, c.device, c.threads, c.x2_path)
    engine = ComputeEngine(upscaler=upscaler, slides=slides, cache=cache, leases=MongoLeases(leases_coll),
                           publish=publish, config=engine_config(settings), worker_id=worker_id,
                           on_backlog=on_backlog)
    return ComputeRuntime(engine, client, store, cache, slides)
