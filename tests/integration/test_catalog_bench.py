"""`python -m bench catalog` run small against the test stack's real catalog server: it loads what
it says, measures every query it names, and leaves no move, claim or lease behind."""

from __future__ import annotations

import pytest

from bench import catalog_bench
from catalog.claims import CLAIMS_COLLECTION
from catalog.db import connect, database
from catalog.lease import COLLECTION as LEASES
from core.settings import Settings

pytestmark = pytest.mark.integration


async def test_catalog_bench_loads_and_measures_at_small_size(stack: Settings) -> None:
    mongo = stack.mongo.model_copy(update={"database": "slidestream_catalog_bench_smoke"})
    settings = stack.model_copy(update={"mongo": mongo})
    result = await catalog_bench.run(settings, 2_000, queries=3, moves_n=4)
    client = connect(mongo)
    try:
        db = database(client, mongo)
        assert result.counted == {"patients": 200, "exams": 600, "images": 2_000}
        assert (result.loaded.patients, result.loaded.exams, result.loaded.images) == (200, 600, 2_000)
        assert sum(result.loaded.by_tier.values()) == 2_000 and set(result.loaded.by_tier) == {"recent", "mid", "long"}

        rows = {row[0]: row for row in result.rows}
        assert list(rows) == list(catalog_bench.MEASURES)
        for name, samples, p50, p95, _answer in result.rows:
            assert samples > 0, name
            assert 0 <= float(p50) <= float(p95), name
        assert rows["image by key"][4] == 1
        assert rows["a patient's images"][4] == catalog_bench.IMAGES_PER_PATIENT
        assert 0 < rows["tier sweep page (1,000 images)"][4] <= 1_000

        # Every timed move (and its warm-up) ran all catalog steps: the image is in mid, the
        # marker is gone, the audit has one entry per move, no claim or lease is left.
        moved = rows["tier move: catalog steps"][1] + 1
        assert await db["audit"].count_documents({"actor": "catalog-bench"}) == moved
        assert await db["images"].count_documents({"pending_move": {"$ne": None}}) == 0
        assert await db["images"].count_documents({"tier": "mid"}) == result.loaded.by_tier["mid"] + moved
        assert await db[CLAIMS_COLLECTION].count_documents({}) == 0
        assert await db[LEASES].count_documents({}) == 0
        report = catalog_bench.report(result, "test")
        assert "2,000 images, 600 exams, 200 patients" in report and "| tier move: catalog steps |" in report
    finally:
        await client.drop_database(mongo.database)
        await client.close()
