"""Demo hook: a 40x region of a stored 5x slide, computed by the compute service, saved as
a side-by-side PNG (LR upsampled by bicubic interpolation | super-resolved)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from compute.codec import decode_png
from compute.plan import SlideGeometry
from compute.upscaler import InterpolationUpscaler
from core.settings import Settings
from core.upscale_client import upscale_tiles
from schemas.events import Region, UpscaleRequested
from schemas.layout import TILE_SIZE
from schemas.topics import Priority

GAP_PX = 8  # white stripe between the two panels


def centre_region(geometry: SlideGeometry, scale: int, size: int = 2 * TILE_SIZE) -> Region:
    """A tile-aligned ``size`` square (HR px) at the slide's centre, clipped to the slide."""
    width, height = geometry.width * scale, geometry.height * scale
    w, h = min(size, width), min(size, height)
    x = max(0, min(width - w, (width // 2 - w // 2) // TILE_SIZE * TILE_SIZE))
    y = max(0, min(height - h, (height // 2 - h // 2) // TILE_SIZE * TILE_SIZE))
    return Region(x=x, y=y, width=w, height=h)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    h = max(left.shape[0], right.shape[0])
    out = np.full((h, left.shape[1] + GAP_PX + right.shape[1], 3), 255, dtype=np.uint8)
    out[: left.shape[0], : left.shape[1]] = left
    out[: right.shape[0], left.shape[1] + GAP_PX :] = right
    return out


async def demo_upscale_region(settings: Settings, exam_id: str, slide_number: int, *, scale: int = 8,
                              region: Region | None = None, output_dir: Path = Path("out"),
                              timeout_s: float = 300.0) -> Path:
    """Request ``region`` (level-0 HR px; default: 512 px at the centre) of the slide at
    ``scale`` as an interactive request, wait for it, save LR-bicubic | SR side by side."""
    from catalog.db import connect, database
    from catalog.repository import Catalog
    from compute.slides import CatalogSlides
    from storage.objects import ObjectStore

    client = connect(settings.mongo)
    store = ObjectStore(settings.storage)
    try:
        slide = await CatalogSlides(Catalog(database(client, settings.mongo)), store).open(exam_id, slide_number)
        region = region or centre_region(slide.geometry, scale)
        request = UpscaleRequested(exam_id=exam_id, slide_number=slide_number, scale=scale,
                                   priority=Priority.INTERACTIVE, region=region, requested_by=None)
        results = await upscale_tiles(settings, request, timeout_s)
        x1 = min(region.x + region.width, slide.geometry.width * scale)
        y1 = min(region.y + region.height, slide.geometry.height * scale)
        sr = np.full((y1 - region.y, x1 - region.x, 3), 255, dtype=np.uint8)
        for result in results:
            tile = decode_png(await store.get_bytes(result.object))
            tx, ty = result.tile.col * TILE_SIZE, result.tile.row * TILE_SIZE
            # the part of the tile inside the region
            sx0, sy0 = max(region.x, tx), max(region.y, ty)
            sx1, sy1 = min(x1, tx + tile.shape[1]), min(y1, ty + tile.shape[0])
            if sx0 < sx1 and sy0 < sy1:
                sr[sy0 - region.y : sy1 - region.y, sx0 - region.x : sx1 - region.x] = \
                    tile[sy0 - ty : sy1 - ty, sx0 - tx : sx1 - tx]
        # LR of the same area (with a little context, so its borders interpolate like its
        # middle), enlarged by interpolation to the same size
        margin = 4
        lx0, ly0 = max(0, region.x // scale - margin), max(0, region.y // scale - margin)
        lx1 = min(slide.geometry.width, -(-x1 // scale) + margin)
        ly1 = min(slide.geometry.height, -(-y1 // scale) + margin)
        lr = slide.read_region(lx0, ly0, lx1 - lx0, ly1 - ly0)
        upsampled = InterpolationUpscaler().upscale_batch([lr], scale)[0]
        ox, oy = region.x - lx0 * scale, region.y - ly0 * scale
        upsampled = upsampled[oy : oy + sr.shape[0], ox : ox + sr.shape[1]]
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / f"sr-{exam_id}-{slide_number:04d}-x{scale}-{region.x}_{region.y}.png"
        Image.fromarray(side_by_side(upsampled, sr)).save(path)
        return path
    finally:
        await client.close()
        store.close()
