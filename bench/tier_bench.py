"""Tier-move throughput and catalog query latency.

    python -m bench.tier_bench [--images 10000] [--queries 30] [--small 40] [--large 8] [--full-small 6]
    python -m bench tier

Runs its own stack (ports 38092.., state in a temp dir; a running dev stack is untouched),
fills the catalog with ``--images`` LR image records (4 slides per exam, 2-3 exams per
patient), then measures:

* catalog query latency (p50/p95 ms) of every query the services make;
* tier moves recent -> mid with the full crash-safe protocol (copy, read-back SHA-256
  verification, catalog update, source delete, ``tier.moved`` to Kafka), for ``--small``
  1 MiB and ``--large`` 16 MiB objects, one at a time and 4 concurrently, first with a
  near-empty catalog, then ``--full-small`` 1 MiB objects with the full catalog.

FerretDB's SQLite backend evaluates update filters by scanning the collection, so with a
large catalog its moves are bound by the catalog; MongoDB serves them from indexes.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.report import machine, percentiles, stack_state_dir, table
from catalog.indexes import ensure_indexes
from catalog.repository import document
from catalog.tiering import TierPolicy
from core.kafka import KafkaSink, producer
from core.settings import Settings, get_settings
from infra import stack
from schemas.catalog import ExamRecord, ImageRecord, PatientRecord
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.layout import lr_key
from storage.runtime import Services, open_services

PORTS = {
    "SLIDESTREAM_KAFKA__PORT": "38092",
    "SLIDESTREAM_KAFKA__CONTROLLER_PORT": "38093",
    "SLIDESTREAM_STORAGE__PORT": "38000",
    "SLIDESTREAM_STORAGE__CONSOLE_PORT": "38001",
    "SLIDESTREAM_MONGO__PORT": "38017",
}
SLIDES_PER_EXAM = 4
NOW = datetime.now(UTC).replace(microsecond=0)


def _bench_settings(state_dir: Path) -> Settings:
    os.environ.update(PORTS)
    os.environ["SLIDESTREAM_STATE_DIR"] = str(state_dir)
    get_settings.cache_clear()
    return get_settings()


async def fill_catalog(svc: Services, images: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """``images`` LR records across patients and exams (bulk inserts: setup, not measured)."""
    patients, exams, image_docs = [], [], []
    exam_docs, patient_docs = [], []
    slide_total = 0
    p = 0
    while slide_total < images:
        p += 1
        patient = f"BENCH-P{p:06d}"
        patients.append(patient)
        patient_docs.append(document(PatientRecord(patient_id=patient, status=rng.choice(["admitted", "discharged"]),
                                                   last_exam_at=NOW - timedelta(days=rng.randint(0, 900)))))
        for e in range(rng.randint(2, 3)):
            exam = f"BENCH-E{p:06d}-{e}"
            exams.append(exam)
            exam_date = NOW - timedelta(days=rng.randint(0, 900))
            exam_docs.append(document(ExamRecord(exam_id=exam, patient_id=patient, exam_date=exam_date)))
            for slide in range(1, SLIDES_PER_EXAM + 1):
                if slide_total >= images:
                    break
                tier = rng.choice([StorageTier.RECENT, StorageTier.MID, StorageTier.LONG])
                image_docs.append(document(ImageRecord(
                    exam_id=exam, patient_id=patient, slide_number=slide, state=ImageState.LR, tier=tier,
                    object=ObjectRef(bucket=svc.store.bucket(tier), key=lr_key(exam, slide)),
                    mirror=ObjectRef(bucket=svc.store.bucket("mirror"), key=lr_key(exam, slide)),
                    acquired_at=exam_date, sha256=hashlib.sha256(exam.encode()).hexdigest(),
                    size_bytes=rng.randint(20, 200) << 20, width=20000, height=15000)))
                slide_total += 1
    for coll, docs in ((svc.catalog.patients, patient_docs), (svc.catalog.exams, exam_docs),
                       (svc.catalog.images, image_docs)):
        for start in range(0, len(docs), 1000):
            await coll.insert_many(docs[start:start + 1000], ordered=False)
    return patients, exams


async def time_queries(svc: Services, patients: list[str], exams: list[str], n: int,
                       rng: random.Random) -> list[list[object]]:
    cat = svc.catalog
    cutoff = NOW - timedelta(days=365)
    queries = {
        "image by exam + slide + state": lambda: cat.get_image(rng.choice(exams), rng.randint(1, 4), 0),
        "images of an exam": lambda: cat.find_images(exam_id=rng.choice(exams)),
        "images of a patient": lambda: cat.find_images(patient_id=rng.choice(patients)),
        "LR images of a patient in recent": lambda: cat.find_images(patient_id=rng.choice(patients),
                                                                    state=ImageState.LR, tier=StorageTier.RECENT),
        "exams of a patient": lambda: cat.exams_of_patient(rng.choice(patients)),
        "patient by ID": lambda: cat.get_patient(rng.choice(patients)),
        "100 patients by ID (sweep page)": lambda: cat.patients_by_id(rng.sample(patients, 100)),
        "sweep page: 1000 mid images past the age limit": lambda: cat.images_in_tier(
            ImageState.LR, StorageTier.MID, acquired_before=cutoff, limit=1000),
        "long images read in the last year": lambda: cat.accessed_since(ImageState.LR, StorageTier.LONG, cutoff),
        "interrupted moves": lambda: cat.pending_moves(NOW),
    }
    rows = []
    for name, query in queries.items():
        await query()  # warm-up
        times = []
        for _ in range(n):
            start = time.perf_counter()
            result = await query()
            times.append((time.perf_counter() - start) * 1000)
        p50, p95 = percentiles(times)
        rows.append([name, f"{p50:.2f}", f"{p95:.2f}", len(result) if isinstance(result, (list, dict)) else 1])
        print(f"  timed: {name} (p50 {p50:.1f} ms)", file=sys.stderr, flush=True)
    return rows


async def stage_moves(svc: Services, count: int, size: int, tag: str) -> list[ImageRecord]:
    """``count`` admitted-patient LR images of ``size`` bytes in recent (and the mirror)."""
    patient = f"BENCH-MOVE-{tag}"
    await svc.catalog.ensure_patient(patient)
    await svc.catalog.ensure_exam(f"BENCH-MOVE-{tag}", patient, NOW)
    images = []
    payload = os.urandom(size)
    for slide in range(1, count + 1):
        data = payload[:-8] + slide.to_bytes(8, "big")  # distinct content per slide
        key = lr_key(f"BENCH-MOVE-{tag}", slide)
        recent, mirror = svc.store.ref("recent", key), svc.store.ref("mirror", key)
        stored = await svc.store.put_bytes(recent, data)
        await svc.store.put_bytes(mirror, data)
        image, _ = await svc.catalog.add_image(ImageRecord(
            exam_id=f"BENCH-MOVE-{tag}", patient_id=patient, slide_number=slide, state=ImageState.LR,
            tier=StorageTier.RECENT, object=recent, mirror=mirror, acquired_at=NOW, sha256=stored.sha256,
            size_bytes=size))
        images.append(image)
    return images


async def time_moves(svc: Services, images: list[ImageRecord], concurrency: int) -> tuple[float, int]:
    gate = asyncio.Semaphore(concurrency)

    async def one(image: ImageRecord) -> str:
        async with gate:
            return (await svc.mover.move(image, StorageTier.MID, "discharge")).outcome

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(one(image) for image in images))
    elapsed = time.perf_counter() - start
    if set(outcomes) != {"moved"}:
        raise RuntimeError(f"unexpected move outcomes {sorted(set(outcomes))}")
    return elapsed, sum(image.size_bytes or 0 for image in images)


async def move_table(svc: Services, runs: list[tuple[str, int, int]], tag: str) -> list[list[object]]:
    rows = []
    for label, count, size in runs:
        for concurrency in (1, 4):
            images = await stage_moves(svc, count, size, f"{tag}-{label.replace(' ', '')}-c{concurrency}")
            elapsed, moved_bytes = await time_moves(svc, images, concurrency)
            rows.append([label, count, concurrency, f"{count / elapsed:.2f}", f"{moved_bytes / elapsed / 1e6:.1f}",
                         f"{elapsed * 1000 / count:.0f}"])
    return rows


async def run(settings: Settings, args: argparse.Namespace) -> None:
    rng = random.Random(5)
    move_headers = ["object size", "objects", "concurrency", "objects/s", "MB/s", "ms per object"]
    async with producer(settings) as prod:
        # 1. Moves against an (almost) empty catalog: bound by object storage and Kafka.
        empty = settings.model_copy(update={"mongo": settings.mongo.model_copy(
            update={"database": f"{settings.mongo.database}_bench_empty"})})
        svc = await open_services(empty, KafkaSink(prod), indexes=False)
        try:
            await svc.client.drop_database(empty.mongo.database)
            await ensure_indexes(svc.catalog.db)
            rows = await move_table(svc, [("1 MiB", args.small, 1 << 20), ("16 MiB", args.large, 16 << 20)], "E")
            print("Tier moves recent -> mid, near-empty catalog (copy, read-back SHA-256 verify, catalog update, "
                  "delete source, tier.moved to Kafka):\n")
            print(table(move_headers, rows))
        finally:
            await svc.close()

        # 2. A catalog of ``--images`` images: query latency, then moves again.
        svc = await open_services(settings, KafkaSink(prod), indexes=False)
        try:
            await svc.client.drop_database(settings.mongo.database)  # the bench's own stack: start empty
            await ensure_indexes(svc.catalog.db)
            t0 = time.perf_counter()
            patients, exams = await fill_catalog(svc, args.images, rng)
            total = await svc.catalog.images.count_documents({})
            print(f"\ncatalog: {total} images, {len(exams)} exams, {len(patients)} patients "
                  f"(filled in {time.perf_counter() - t0:.1f} s)\n")
            rows = await time_queries(svc, patients, exams, args.queries, rng)
            print(f"Catalog query latency, {args.queries} queries each (FerretDB {settings.mongo.uri}):\n")
            print(table(["query", "p50 ms", "p95 ms", "rows"], rows))
            rows = await move_table(svc, [("1 MiB", args.full_small, 1 << 20)], "F")
            print(f"\nTier moves recent -> mid with {total} images in the catalog:\n")
            print(table(move_headers, rows))
            policy = TierPolicy.from_settings(settings.tiering)
            print(f"\n(age limit {policy.age_limit.days} days; {machine()}; MinIO and FerretDB on loopback)")
        finally:
            await svc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--small", type=int, default=40, help="1 MiB objects to move per run")
    parser.add_argument("--large", type=int, default=8, help="16 MiB objects to move per run")
    parser.add_argument("--full-small", type=int, default=6,
                        help="1 MiB objects to move per run with the full catalog")
    args = parser.parse_args(argv)
    # A SIGTERM (e.g. from `timeout`) still stops the bench's servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state_dir = stack_state_dir("slidestream-tier-bench-")
    settings = _bench_settings(state_dir)
    try:
        stack.up(settings, echo=lambda _msg: None)
        asyncio.run(run(settings, args))
    finally:
        stack.down(settings, echo=lambda _msg: None)
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
