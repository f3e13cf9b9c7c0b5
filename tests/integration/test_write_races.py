"""Races on the catalog's compare-and-set writes, on the real FerretDB and MinIO, with the
CPU loaded by a busy process (the race showed only on a busy machine).

FerretDB v1 runs an update's query and write as two steps (FerretDB#3040), so before
``catalog.claims`` two movers could both "win" the same image. Here many movers race on the
same images, hundreds of times: exactly one wins each race, and nothing is copied, deleted
or published twice.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from catalog.db import connect, database
from catalog.lease import Leases
from catalog.repository import Catalog
from core.settings import Settings
from schemas.catalog import ImageRecord, ReportRecord
from schemas.common import ObjectRef, StorageTier
from schemas.events import TierMoved
from storage.mover import MoveResult, TierMover
from storage.objects import ObjectStore
from tests.integration.test_tier_services import saved_patient
from tests.integration.tierkit import object_sha, services, uid

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def busy_cpu() -> Iterator[None]:
    """One process spinning on a core for the length of the test."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


class CountingStore(ObjectStore):
    """The real object store, counting the copies and deletes each worker makes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.copies: Counter[str] = Counter()
        self.deletes: Counter[str] = Counter()

    async def copy(self, source: ObjectRef, target: ObjectRef, **kwargs) -> None:
        self.copies[f"{target.bucket}/{target.key}"] += 1
        await super().copy(source, target, **kwargs)

    async def delete(self, ref: ObjectRef) -> None:
        self.deletes[f"{ref.bucket}/{ref.key}"] += 1
        await super().delete(ref)


@dataclass
class Worker:
    """One tier worker as a separate process would have it: its own database client,
    object store and mover."""

    catalog: Catalog
    store: CountingStore
    mover: TierMover
    published: list[TierMoved] = field(default_factory=list)


async def _workers(stack: Settings, count: int, exits: AsyncExitStack) -> list[Worker]:
    workers = []
    for n in range(count):
        client = connect(stack.mongo)
        exits.push_async_callback(client.close)
        store = CountingStore(stack.storage)
        exits.callback(store.close)
        catalog = Catalog(database(client, stack.mongo))
        published: list[TierMoved] = []

        async def publish(event: TierMoved, sink: list[TierMoved] = published) -> None:
            sink.append(event)

        mover = TierMover(catalog, store, publish, actor=f"racer-{n}")  # type: ignore[arg-type]  # a list-appending sink
        workers.append(Worker(catalog, store, mover, published))
    return workers


def _count(workers: list[Worker], what: str, key: str) -> int:
    return sum(getattr(w.store, what)[key] for w in workers)


async def _race(workers: list[Worker], image: ImageRecord, to_tier: StorageTier) -> list[MoveResult]:
    return list(await asyncio.gather(*(w.mover.move(image, to_tier, "discharge") for w in workers)))


@pytest.mark.parametrize("movers,rounds", [(2, 13), (4, 13)])
async def test_racing_movers_each_race_has_exactly_one_winner(
        stack: Settings, busy_cpu: None, movers: int, rounds: int) -> None:
    """Eight images ping-pong between recent and mid; every round all movers race to move
    each of them (8 x 13 = 104 races per run)."""
    async with services(stack) as svc, AsyncExitStack() as exits:
        images: list[ImageRecord] = []
        for _ in range(2):
            images += (await saved_patient(svc, slides=4))[2]
        workers = await _workers(stack, movers, exits)
        for round_no in range(rounds):
            to_tier = StorageTier.MID if round_no % 2 == 0 else StorageTier.RECENT
            before = [await svc.catalog.reload(i) for i in images]
            targets = [f"{svc.store.bucket(to_tier)}/{img.object.key}" for img in before]
            sources = [f"{img.object.bucket}/{img.object.key}" for img in before]
            copies0 = [_count(workers, "copies", t) for t in targets]
            deletes0 = [_count(workers, "deletes", s) for s in sources]
            published0 = sum(len(w.published) for w in workers)

            results = await asyncio.gather(*(_race(workers, img, to_tier) for img in before))

            for n, (img, outcome) in enumerate(zip(before, results, strict=True)):
                names = [r.outcome for r in outcome]
                assert names.count("moved") == 1, f"round {round_no} exam {img.exam_id}: {names}"
                assert set(names) <= {"moved", "unchanged", "conflict"}, names
                after = await svc.catalog.reload(img)
                assert after.tier is to_tier and after.pending_move is None
                assert await object_sha(svc, after.object) == img.sha256
                assert not await svc.store.exists(img.object)  # the source is gone
                assert _count(workers, "copies", targets[n]) - copies0[n] == 1  # copied once
                assert _count(workers, "deletes", sources[n]) - deletes0[n] == 1  # deleted once
            assert sum(len(w.published) for w in workers) - published0 == len(images)  # one tier.moved each


async def test_concurrent_compare_and_sets_on_one_revision_have_one_winner(
        stack: Settings, busy_cpu: None) -> None:
    """The primitive under the movers: 4 clients race a compare-and-set from the same
    revision, 200 times; the others see a conflict and no write is lost."""
    async with services(stack) as svc, AsyncExitStack() as exits:
        _, exam, images = await saved_patient(svc, slides=1)
        catalogs = []
        for _ in range(4):
            client = connect(stack.mongo)
            exits.push_async_callback(client.close)
            catalogs.append(Catalog(database(client, stack.mongo)))
        image = images[0]
        for race in range(200):
            current = await svc.catalog.reload(image)
            won = await asyncio.gather(*(c._compare_and_set(current, {"size_bytes": 1000 + 10 * race + n})
                                         for n, c in enumerate(catalogs)))
            winners = [n for n, w in enumerate(won) if w is not None]
            assert len(winners) == 1, f"race {race}: winners {winners}"
            stored = await svc.catalog.reload(image)
            assert stored.revision == current.revision + 1
            assert stored.size_bytes == 1000 + 10 * race + winners[0]  # the winner's write is the one kept


async def test_access_counts_are_not_lost_and_never_undo_a_move(stack: Settings, busy_cpu: None) -> None:
    """Reads are counted while a move runs: no count is lost and the move is not undone
    (on FerretDB an unclaimed $inc wrote back the whole document it had read)."""
    async with services(stack) as svc:
        _, exam, images = await saved_patient(svc, slides=1)
        image = images[0]
        for to_tier in (StorageTier.MID, StorageTier.RECENT, StorageTier.MID):
            result, *_ = await asyncio.gather(svc.mover.move(image, to_tier, "discharge"),
                                              *(svc.catalog.record_access(image) for _ in range(6)))
            assert result.outcome == "moved"
            stored = await svc.catalog.reload(image)
            assert stored.tier is to_tier and stored.pending_move is None
        assert (await svc.catalog.reload(image)).access_count == 18


async def test_leases_and_report_saves_have_one_winner(stack: Settings, busy_cpu: None) -> None:
    async with services(stack) as svc, AsyncExitStack() as exits:
        _, exam, _ = await saved_patient(svc, slides=1)
        leases, catalogs = [], []
        for _ in range(4):
            client = connect(stack.mongo)
            exits.push_async_callback(client.close)
            db = database(client, stack.mongo)
            leases.append(Leases(db["leases"]))
            catalogs.append(Catalog(db))
        # An expired lease taken over by four workers at once, 100 times.
        for race in range(100):
            key = uid("race-lease-")
            assert await leases[0].acquire(key, "dead-worker", timedelta(milliseconds=1))
            await asyncio.sleep(0.005)
            granted = await asyncio.gather(*(lease.acquire(key, f"w{n}", timedelta(seconds=30))
                                             for n, lease in enumerate(leases)))
            assert sum(granted) == 1, f"race {race}: {granted}"
            assert await leases[0].holder(key) == f"w{granted.index(True)}"
        # Four authors save over the same report revision, 50 times.
        from catalog.errors import ReportConflict

        report = await svc.catalog.save_report(
            ReportRecord(exam_id=exam, author="dr-0", findings="", diagnosis="", status="draft"),
            expected_revision=None)
        for race in range(50):
            outcomes = await asyncio.gather(*(c.save_report(
                report.model_copy(update={"author": f"dr-{n}", "findings": f"race {race}"}),
                expected_revision=report.revision) for n, c in enumerate(catalogs)), return_exceptions=True)
            saved = [o for o in outcomes if isinstance(o, ReportRecord)]
            assert len(saved) == 1 and all(isinstance(o, ReportConflict) for o in outcomes if o not in saved)
            report = await svc.catalog.get_report(exam)
            assert report.revision == saved[0].revision and report.author == saved[0].author
