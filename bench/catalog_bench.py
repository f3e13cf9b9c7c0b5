"""The catalog at hospital scale: load ``--images`` images and time the queries the services make.

    python -m bench catalog                                    # 1,000,000 images, local default backend
    python -m bench.catalog_bench --images 50000 --backend sqlite
    python -m bench.catalog_bench --mongo-url mongodb://127.0.0.1:27017/   # a running MongoDB

Without ``--mongo-url`` it runs its own catalog server (FerretDB, and PostgreSQL when that is
the backend) on ports 38117/38132 with state in a temp dir; a running dev stack is untouched.
The catalog gets ``--images`` LR images, 10 per patient (exams of 4, 4 and 2 slides), loaded in
bulk as the documents the repository writes (``catalog.repository.document`` of the schema
records), with the catalog's indexes created first and the sweep's day buckets noted as the
repository notes them (``Catalog.note_sweep_buckets``). Then p50/p95 of:

* an image by key (``Catalog.get_image``);
* a patient's images (``Catalog.find_images(patient_id=...)``);
* a worklist page: 50 of a pathologist's exams, newest first, with the match count and their
  LR slides (``catalog.exam_search``, as the viewer's list);
* the tier sweep page: 1,000 mid images past the age limit, oldest acquisition days first
  (the first page of ``Catalog.sweep_pages``: one equality query per day bucket), then that
  page's patients (``patients_by_id``), as ``storage.scheduler`` pages;
* a tier move's catalog steps, as ``storage.mover.TierMover`` runs them: the move lease,
  reload, ``begin_move``, the markers of ``catalog.moves.plan`` (``advance_move``,
  ``relocate``, ``clear_move``; each a compare-and-set with its claim from
  ``catalog.claims``), the audit entry and the lease release (object copies not included).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import machine, percentiles, stack_state_dir, table
from catalog import moves
from catalog.db import connect, database
from catalog.exam_search import ExamQuery, ExamScope, lr_slides_of, search_exams
from catalog.lease import COLLECTION as LEASES
from catalog.lease import Leases
from catalog.repository import Catalog, document, image_id
from core.settings import Settings, get_settings
from infra import stack
from infra.bootstrap import ensure_catalog_indexes
from schemas.catalog import AuditEntry, ExamRecord, ImageRecord, PatientRecord, PendingMove, db_now
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.layout import lr_key

PORTS = {"SLIDESTREAM_MONGO__PORT": "38117", "SLIDESTREAM_MONGO__POSTGRES_PORT": "38132"}
# 10 images per patient: exams of 4, 4 and 2 slides (10^6 images = 10^5 patients).
EXAM_SLIDES = (4, 4, 2)
IMAGES_PER_PATIENT = sum(EXAM_SLIDES)
PATHOLOGISTS = 200
DEPARTMENTS = 20
BATCH = 1000
BENCH_TIMEOUT_S = 900.0
NOW = datetime.now(UTC).replace(microsecond=0)
AGE_LIMIT = timedelta(days=365)
MEASURES = ("image by key", "a patient's images", "worklist page (50 exams + slides)",
            "tier sweep page (1,000 images)", "the sweep page's patients", "tier move: catalog steps")


def patient_key(p: int) -> str:
    return f"CB-P{p:07d}"


def exam_key(p: int, e: int) -> str:
    return f"CB-E{p:07d}-{e}"


def pathologist(n: int) -> str:
    return f"path{n:03d}"


@dataclass
class Loaded:
    patients: int = 0
    exams: int = 0
    images: int = 0
    by_tier: dict[str, int] = field(default_factory=dict)


def records(images: int, seed: int = 5) -> Iterator[tuple[str, dict[str, Any]]]:
    """(collection, document) for ``images`` images with their patients and exams, parents first."""
    rng = random.Random(seed)
    made, p = 0, 0
    tiers = (StorageTier.RECENT, StorageTier.MID, StorageTier.LONG)
    while made < images:
        p += 1
        patient = patient_key(p)
        first_exam = NOW - timedelta(days=rng.randint(0, 900))
        yield "patients", document(PatientRecord(
            patient_id=patient, status=rng.choice(["admitted", "discharged"]), last_exam_at=first_exam))
        for e, slides in enumerate(EXAM_SLIDES):
            if made >= images:
                break
            exam, exam_date = exam_key(p, e), first_exam - timedelta(days=30 * e)
            yield "exams", document(ExamRecord(
                exam_id=exam, patient_id=patient, exam_date=exam_date, body_part="breast",
                pathologist=pathologist(rng.randrange(PATHOLOGISTS)), department=f"dept{rng.randrange(DEPARTMENTS):02d}"))
            for slide in range(1, slides + 1):
                if made >= images:
                    break
                tier = rng.choice(tiers)
                key = lr_key(exam, slide)
                yield "images", document(ImageRecord(
                    exam_id=exam, patient_id=patient, slide_number=slide, state=ImageState.LR, tier=tier,
                    object=ObjectRef(bucket=f"slidestream-{tier.value}", key=key),
                    mirror=ObjectRef(bucket="slidestream-mirror", key=key), acquired_at=exam_date,
                    sha256=hashlib.sha256(key.encode()).hexdigest(), size_bytes=rng.randint(20, 200) << 20,
                    width=20000, height=15000, magnification=5.0))
                made += 1


async def load(catalog: Catalog, images: int, progress: Callable[[str], None]) -> Loaded:
    """Bulk-insert the catalog (setup, not measured): batches of ``BATCH`` documents."""
    loaded = Loaded()
    pending: dict[str, list[dict[str, Any]]] = {"patients": [], "exams": [], "images": []}
    colls = {"patients": catalog.patients, "exams": catalog.exams, "images": catalog.images}
    start, last = time.perf_counter(), 0.0
    noted: set[str] = set()

    async def flush(name: str) -> None:
        if pending[name]:
            if name == "images":  # the day buckets first, as Catalog.add_image does (new ones only)
                fresh = {doc[ImageRecord.SWEEP_FIELD] for doc in pending[name]} - noted
                await catalog.note_sweep_buckets(fresh)
                noted.update(fresh)
            await colls[name].insert_many(pending[name], ordered=False)
            pending[name] = []

    for name, doc in records(images):
        pending[name].append(doc)
        if name == "images":
            loaded.images += 1
            loaded.by_tier[doc["tier"]] = loaded.by_tier.get(doc["tier"], 0) + 1
        else:
            setattr(loaded, name, getattr(loaded, name) + 1)
        if len(pending[name]) >= BATCH:
            if name != "patients":  # parents before children
                await flush("patients")
            if name == "images":
                await flush("exams")
            await flush(name)
            elapsed = time.perf_counter() - start
            if elapsed - last > 30:
                last = elapsed
                progress(f"loaded {loaded.images} images in {elapsed:.0f} s")
    for name in ("patients", "exams", "images"):
        await flush(name)
    return loaded


async def move_catalog_steps(catalog: Catalog, leases: Leases, image: ImageRecord, to_tier: StorageTier) -> ImageRecord:
    """The catalog side of one tier move, step by step as the mover runs it."""
    key = f"tier-move/{image_id(image.exam_id, image.slide_number, image.state)}"
    async with leases.held(key, "catalog-bench", timedelta(seconds=30), wait=timedelta(seconds=60)) as owned:
        if not owned:
            raise RuntimeError("the bench lost its own move lease")
        current = await catalog.reload(image)
        assert current is not None and current.pending_move is None
        pending = PendingMove(to_tier=to_tier, target=ObjectRef(bucket=f"slidestream-{to_tier.value}",
                                                                 key=current.object.key),
                              step="copying", reason="age", from_tier=current.tier,
                              source=current.object)
        claimed = await catalog.begin_move(current, pending)
        if claimed is None:
            raise RuntimeError("begin_move lost a compare-and-set nobody else races")
        current = claimed
        for action in moves.plan(pending, same_location=False):
            step = moves.STEP_AFTER[action]
            if action is moves.Action.UPDATE_CATALOG:
                nxt = await catalog.relocate(current)
            elif action is moves.Action.CLEAR:
                nxt = await catalog.clear_move(current)
            elif step is not None:
                nxt = await catalog.advance_move(current, step)
            else:
                continue  # PUBLISH: Kafka, not the catalog
            if nxt is None:
                raise RuntimeError(f"{action.value} lost a compare-and-set nobody else races")
            current = nxt
        await catalog.audit(AuditEntry(
            at=db_now(), actor="catalog-bench", action="tier_move", outcome="ok",
            target={"exam_id": image.exam_id, "slide_number": image.slide_number, "state": int(image.state)},
            detail={"from_tier": pending.from_tier.value if pending.from_tier else None,
                    "to_tier": to_tier.value, "reason": "age"}))
    return current


async def measure(catalog: Catalog, loaded: Loaded, queries: int, move_count: int,
                  progress: Callable[[str], None]) -> list[list[object]]:
    """One row per measure: name, samples, p50 ms, p95 ms, rows of the last answer."""
    rng = random.Random(11)
    full_patients = max(1, loaded.images // IMAGES_PER_PATIENT)
    cutoff = NOW - AGE_LIMIT
    sweep_patients: list[str] = []

    def some_image() -> tuple[str, int]:
        n = rng.randrange(loaded.images)
        p, within = n // IMAGES_PER_PATIENT + 1, n % IMAGES_PER_PATIENT
        for e, slides in enumerate(EXAM_SLIDES):
            if within < slides:
                return exam_key(p, e), within + 1
            within -= slides
        raise AssertionError

    async def by_key() -> int:
        exam, slide = some_image()
        found = await catalog.get_image(exam, slide, ImageState.LR)
        assert found is not None
        return 1

    async def of_patient() -> int:
        found = await catalog.find_images(patient_id=patient_key(rng.randint(1, full_patients)))
        assert found
        return len(found)

    async def worklist() -> int:
        exams, total = await search_exams(catalog, ExamQuery(limit=50),
                                          ExamScope(pathologist=pathologist(rng.randrange(PATHOLOGISTS))))
        await lr_slides_of(catalog, [exam.exam_id for exam in exams])
        return len(exams)

    async def sweep_page() -> int:
        pages = catalog.sweep_pages(ImageState.LR, StorageTier.MID, acquired_before=cutoff, limit=1000)
        async with aclosing(pages):
            page: list[ImageRecord] = await anext(pages, [])
        sweep_patients[:] = sorted({image.patient_id for image in page})
        return len(page)

    async def page_patients() -> int:
        return len(await catalog.patients_by_id(sweep_patients))

    # Moves: distinct images (recent -> mid), so each starts from an unmoved record.
    leases = Leases(catalog.db[LEASES], claims=catalog.claims)
    move_pool = list(range(loaded.images))
    rng.shuffle(move_pool)
    to_move: list[ImageRecord] = []
    for n in move_pool:
        if len(to_move) >= move_count + 1:
            break
        p, within = n // IMAGES_PER_PATIENT + 1, n % IMAGES_PER_PATIENT
        e = 0 if within < 4 else (1 if within < 8 else 2)
        slide = within - 4 * e + 1
        image = await catalog.get_image(exam_key(p, e), slide, ImageState.LR)
        if image is not None and image.tier is StorageTier.RECENT and image.pending_move is None:
            to_move.append(image)

    async def one_move() -> int:
        image = to_move.pop()
        moved = await move_catalog_steps(catalog, leases, image, StorageTier.MID)
        assert moved.tier is StorageTier.MID and moved.pending_move is None
        return 1

    plan: list[tuple[str, Callable[[], Awaitable[int]], int]] = [
        (MEASURES[0], by_key, queries), (MEASURES[1], of_patient, queries),
        (MEASURES[2], worklist, queries), (MEASURES[3], sweep_page, max(5, queries // 10)),
        (MEASURES[4], page_patients, max(5, queries // 10)),
        (MEASURES[5], one_move, min(move_count, len(to_move) - 1)),
    ]
    rows: list[list[object]] = []
    for name, run_one, samples in plan:
        if samples <= 0:
            raise RuntimeError(f"no samples for {name}")
        await run_one()  # warm-up
        times = []
        last = 0
        for _ in range(samples):
            start = time.perf_counter()
            last = await run_one()
            times.append((time.perf_counter() - start) * 1000)
        p50, p95 = percentiles(times)
        rows.append([name, samples, f"{p50:.2f}", f"{p95:.2f}", last])
        progress(f"timed {name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    return rows


@dataclass
class Result:
    loaded: Loaded
    counted: dict[str, int]
    load_s: float
    rows: list[list[object]]


async def run(settings: Settings, images: int, *, queries: int = 100, moves_n: int = 50,
              progress: Callable[[str], None] = lambda _m: None) -> Result:
    """Load a fresh catalog into ``settings.mongo.database`` (dropped first) and measure."""
    # FerretDB counts and sorts by reading documents: at 10^6 images a count or a sweep page
    # takes longer than the services' 30 s socket timeout.
    client = connect(settings.mongo, timeout_s=BENCH_TIMEOUT_S)
    try:
        db = database(client, settings.mongo)
        await client.drop_database(settings.mongo.database)
        await ensure_catalog_indexes(settings.mongo)  # as `infra up` does (PostgreSQL: + equality indexes)
        catalog = Catalog(db, point_queries=settings.mongo.point_queries)
        t0 = time.perf_counter()
        loaded = await load(catalog, images, progress)
        load_s = time.perf_counter() - t0
        counted = {name: await db[name].count_documents({}) for name in ("patients", "exams", "images")}
        progress(f"loaded {counted} in {load_s:.0f} s")
        rows = await measure(catalog, loaded, queries, moves_n, progress)
        return Result(loaded, counted, load_s, rows)
    finally:
        await client.close()


def report(result: Result, where: str) -> str:
    c = result.counted
    return "\n".join([
        f"Catalog: {c['images']:,} images, {c['exams']:,} exams, {c['patients']:,} patients "
        f"(loaded in {result.load_s:.0f} s); {where}; {machine()}\n",
        table(["measure", "samples", "p50 ms", "p95 ms", "rows"], result.rows),
    ])


def _bench_settings(state_dir: Path, backend: str | None) -> Settings:
    os.environ.update(PORTS)
    os.environ["SLIDESTREAM_STATE_DIR"] = str(state_dir)
    if backend:
        os.environ["SLIDESTREAM_MONGO__BACKEND"] = backend
    get_settings.cache_clear()
    return get_settings()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100, help="samples per query (sweep pages: a tenth)")
    parser.add_argument("--moves", type=int, default=50, help="tier moves to time")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default=None,
                        help="FerretDB backend of the bench's own server (default: the settings' default)")
    parser.add_argument("--mongo-url", default=None,
                        help="measure a running MongoDB-protocol server instead (database slidestream_catalog_bench)")
    args = parser.parse_args(argv)
    if args.images < IMAGES_PER_PATIENT:
        parser.error(f"--images must be at least {IMAGES_PER_PATIENT}")

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    if args.mongo_url:
        settings = get_settings()
        mongo = settings.mongo.model_copy(update={"url": args.mongo_url, "database": "slidestream_catalog_bench"})
        settings = settings.model_copy(update={"mongo": mongo})
        result = asyncio.run(run(settings, args.images, queries=args.queries, moves_n=args.moves, progress=progress))
        print(report(result, f"server {args.mongo_url}"))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` still stops our servers
    state_dir = stack_state_dir("slidestream-catalog-bench-")
    settings = _bench_settings(state_dir, args.backend)
    names = stack.catalog_server_names(settings)
    try:
        stack.up(settings, names, run_bootstrap=False, echo=lambda _msg: None)
        result = asyncio.run(run(settings, args.images, queries=args.queries, moves_n=args.moves, progress=progress))
        print(report(result, f"FerretDB v1 on {settings.mongo.backend}, loopback"))
    finally:
        stack.down(settings, names, echo=lambda _msg: None)
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
