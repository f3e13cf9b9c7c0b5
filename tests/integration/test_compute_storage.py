"""The compute engine on the real catalog (FerretDB) and object store (MinIO), without Kafka:
leases shared between workers, LR reads through the catalog, tiles in the hr-cache bucket."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from catalog.db import connect, database
from catalog.repository import Catalog
from compute.codec import decode_png
from compute.engine import ComputeEngine, EngineConfig
from compute.samples import downsample, load_rgb, shared_images, store_sample_slide
from compute.slides import CatalogSlides
from compute.tile_cache import S3TileCache
from compute.tile_leases import LEASE_COLLECTION, MongoLeases
from compute.upscaler import InterpolationUpscaler
from core.settings import Settings
from schemas.events import Event, Region, UpscaleDone, UpscaleFailed, UpscaleRequested
from schemas.layout import TILE_SIZE
from storage.objects import ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def leases(stack: Settings) -> AsyncIterator[MongoLeases]:
    client = connect(stack.mongo)
    coll = database(client, stack.mongo)[f"{LEASE_COLLECTION}_{uuid.uuid4().hex[:8]}"]
    try:
        yield MongoLeases(coll)
    finally:
        await coll.drop()
        await client.close()


async def test_one_lease_per_tile_among_racing_workers(leases: MongoLeases) -> None:
    key = "hr/EX/0001/x8/12/3_4.png"
    granted = await asyncio.gather(*(leases.acquire(key, f"worker-{i}", ttl_s=30) for i in range(12)))
    assert sum(granted) == 1
    winner = f"worker-{granted.index(True)}"
    assert await leases.holder(key) == winner
    assert await leases.acquire(key, winner, ttl_s=30)  # the holder may renew
    await leases.release(key, "someone-else")  # only the holder can release
    assert await leases.holder(key) == winner
    await leases.release(key, winner)
    assert await leases.holder(key) is None
    assert await leases.acquire(key, "worker-late", ttl_s=30)


async def test_expired_leases_are_taken_over_and_purged(leases: MongoLeases) -> None:
    assert await leases.acquire("tile-a", "dead-worker", ttl_s=0.2)
    assert await leases.acquire("tile-b", "dead-worker", ttl_s=0.2)
    assert not await leases.acquire("tile-a", "live-worker", ttl_s=30)
    await asyncio.sleep(0.4)
    assert await leases.acquire("tile-a", "live-worker", ttl_s=30)  # nothing stays in flight forever
    assert await leases.purge_expired() == 1  # tile-b; tile-a is live again
    assert await leases.holder("tile-a") == "live-worker"


async def test_racing_workers_taking_a_viewport_of_leases_at_once_get_each_tile_once(leases: MongoLeases) -> None:
    keys = [f"hr/EX/0001/x8/12/{c}_0.png" for c in range(24)]
    assert await leases.acquire("hr/EX/0001/x8/12/5_0.png", "earlier", ttl_s=30)  # one already held
    assert await leases.acquire("hr/EX/0001/x8/12/6_0.png", "expired", ttl_s=0.2)  # one about to expire
    await asyncio.sleep(0.4)
    grants = await asyncio.gather(*(leases.acquire_many(keys, f"worker-{i}", ttl_s=30) for i in range(4)))
    for key in keys:
        winners = [i for i, granted in enumerate(grants) if granted[key]]
        if key.endswith("/5_0.png"):
            assert winners == [] and await leases.holder(key) == "earlier"
        else:  # the free keys by the unordered insert, the expired one by compare-and-set
            assert len(winners) == 1, (key, winners)
            assert await leases.holder(key) == f"worker-{winners[0]}"
    again = await leases.acquire_many(keys[:3], "worker-x", ttl_s=30)
    assert not any(again.values())


@pytest.fixture(scope="module")
def lr_pixels() -> np.ndarray:
    from core.settings import get_settings

    images = shared_images(get_settings().shared_data)
    if not images:
        pytest.skip("shared H&E data not available")
    return downsample(load_rgb(images[2]), 4)[:200, :240]


async def test_engine_reads_lr_through_the_catalog_and_fills_the_hr_cache(
        stack: Settings, leases: MongoLeases, lr_pixels: np.ndarray) -> None:
    exam = f"IT-CS-{uuid.uuid4().hex[:8]}"
    await store_sample_slide(stack, exam, 1, lr_pixels)
    client = connect(stack.mongo)
    store = ObjectStore(stack.storage)
    events: list[Event] = []

    async def collect(event: Event) -> None:
        events.append(event)

    engine = ComputeEngine(upscaler=InterpolationUpscaler(), slides=CatalogSlides(Catalog(database(client, stack.mongo)), store),
                           cache=S3TileCache.from_store(store), leases=leases, publish=collect,
                           config=EngineConfig(max_batch=4))
    good = UpscaleRequested(exam_id=exam, slide_number=1, scale=4, priority="interactive",
                            region=Region(x=0, y=0, width=960, height=800))
    unknown = UpscaleRequested(exam_id=exam, slide_number=2, scale=4, priority="interactive",
                               region=Region(x=0, y=0, width=10, height=10))
    task = asyncio.create_task(engine.run())
    try:
        await engine.submit(unknown)
        await engine.submit(good)
        await asyncio.wait_for(engine.wait_idle(), 120)
    finally:
        engine.stop()
        await task
        await client.close()
    [failed] = [e for e in events if isinstance(e, UpscaleFailed)]
    assert failed.request_id == unknown.request_id and "no LR image" in failed.reason
    results = [r for e in events if isinstance(e, UpscaleDone) for r in e.results]
    assert sorted((r.tile.col, r.tile.row) for r in results) == [(c, r) for c in range(4) for r in range(4)]
    whole = InterpolationUpscaler().upscale_batch([lr_pixels], 4)[0]
    for r in results:
        assert r.object.bucket == stack.storage.hr_cache.bucket
        tile = decode_png(await store.get_bytes(r.object))
        y0, x0 = r.tile.row * TILE_SIZE, r.tile.col * TILE_SIZE
        np.testing.assert_array_equal(tile, whole[y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]])
    store.close()
