"""Sample LR slides from the shared H&E data, for tests, the bench and the demo.

A 40x MoNuSeg tile area-downsampled by 8 is what a 5x scan of the same tissue looks like
(``slide_io.resample``), so x8 super-resolution can be compared against the real 40x.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slide_io import Compression, open_slide, write_pyramid
from slide_io.resample import area_resize

if TYPE_CHECKING:
    from core.settings import Settings
    from schemas.catalog import ImageRecord

MONUSEG = "monuseg2018"


def shared_images(shared_data: Path, folder: str = MONUSEG) -> list[Path]:
    return sorted((Path(shared_data) / folder).glob("*.tif"))


def load_rgb(path: Path) -> np.ndarray:
    with open_slide(path) as source:
        return source.read_level(0)


def downsample(pixels: np.ndarray, factor: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    return area_resize(pixels, max(1, w // factor), max(1, h // factor))


def tile_mosaic(images: list[np.ndarray], columns: int) -> np.ndarray:
    """Images of equal size side by side, ``columns`` per row (a larger 'slide')."""
    rows = [np.concatenate(images[i : i + columns], axis=1) for i in range(0, len(images), columns)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def write_lr_slide(pixels: np.ndarray, dest: Path, *, mpp: float = 2.0, magnification: float = 5.0,
                   lossless: bool = True) -> Path:
    """Store ``pixels`` as an LR pyramidal TIFF (lossless by default, so tests can compare)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_pyramid(pixels, dest, mpp=mpp, magnification=magnification,
                  compression=Compression.ZSTD if lossless else Compression.JPEG)
    return dest


async def store_sample_slide(settings: Settings, exam_id: str, slide_number: int, pixels: np.ndarray,
                             *, patient_id: str = "SAMPLE-PATIENT-1", mpp: float = 2.0,
                             magnification: float = 5.0) -> ImageRecord:
    """Put an LR slide where the save function leaves one: the TIFF in the recent tier and
    patient, exam and image rows in the catalog (idempotent)."""
    import io
    from datetime import datetime

    from catalog.db import connect, database
    from catalog.repository import Catalog
    from schemas.catalog import ImageRecord
    from schemas.common import ImageState, StorageTier
    from schemas.layout import lr_key
    from storage.objects import ObjectStore

    buffer = io.BytesIO()
    write_pyramid(pixels, buffer, mpp=mpp, magnification=magnification, compression=Compression.ZSTD)
    store = ObjectStore(settings.storage)
    client = connect(settings.mongo)
    try:
        ref = store.ref(StorageTier.RECENT, lr_key(exam_id, slide_number))
        stored = await store.put_bytes(ref, buffer.getvalue(), content_type="image/tiff")
        catalog = Catalog(database(client, settings.mongo))
        now = datetime.now(UTC)
        await catalog.ensure_patient(patient_id)
        await catalog.ensure_exam(exam_id, patient_id, now)
        image, _ = await catalog.add_image(ImageRecord(
            exam_id=exam_id, patient_id=patient_id, slide_number=slide_number, state=ImageState.LR,
            tier=StorageTier.RECENT, object=ref, acquired_at=now, sha256=stored.sha256,
            size_bytes=stored.size, width=int(pixels.shape[1]), height=int(pixels.shape[0]),
            magnification=magnification, mpp=mpp))
        return image
    finally:
        await client.close()
        store.close()
