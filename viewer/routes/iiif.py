"""IIIF Image API 3.0 for every slide: ``info.json`` and region/size requests, composed from
the same tiles as Deep Zoom (LR, hr-cache, or placeholders while SR is computed)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

from schemas.layout import TILE_SIZE, level_size
from viewer.access import Ctx, User, require_exam
from viewer.deepzoom import SlideView
from viewer.iiif import IiifError, IiifPlan, info, plan, tiles_of
from viewer.lr_tiles import encode
from viewer.tile_service import TileService

router = APIRouter(prefix="/api/iiif", tags=["IIIF"])
SlideNo = Annotated[int, Path(ge=1, le=9999)]
IIIF_JSON = 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'


@router.get("/{exam_id}/{slide_number}/info.json", responses={401: {}, 403: {}, 404: {}})
async def image_info(exam_id: str, slide_number: SlideNo, request: Request, user: User, ctx: Ctx) -> JSONResponse:
    require_exam(user, await ctx.exam(exam_id))
    _, view = await ctx.tiles.view(exam_id, slide_number)
    base = str(request.url_for("image_info", exam_id=exam_id, slide_number=slide_number)).removesuffix("/info.json")
    return JSONResponse(info(view, base), media_type=IIIF_JSON)


async def compose(tiles: TileService, exam_id: str, slide_number: int, view: SlideView,
                  p: IiifPlan) -> tuple[np.ndarray, set[str]]:
    factor, c0, r0, c1, r1 = tiles_of(view, p)
    level_w, level_h = level_size(view.width, view.height, p.level)
    cols = [c for c in range(c0, c1 + 1) if c * TILE_SIZE < level_w]
    rows = [r for r in range(r0, r1 + 1) if r * TILE_SIZE < level_h]
    got = await asyncio.gather(*(tiles.pixels(exam_id, slide_number, p.level, c, r) for r in rows for c in cols))
    canvas = np.full((len(rows) * TILE_SIZE, len(cols) * TILE_SIZE, 3), 255, np.uint8)
    sources = set()
    for index, (pixels, source) in enumerate(got):
        r, c = divmod(index, len(cols))
        canvas[r * TILE_SIZE: r * TILE_SIZE + pixels.shape[0], c * TILE_SIZE: c * TILE_SIZE + pixels.shape[1]] = pixels
        sources.add(source)
    x0, y0 = p.region.x / factor - c0 * TILE_SIZE, p.region.y / factor - r0 * TILE_SIZE
    box = (int(x0), int(y0), max(int(x0) + 1, round(x0 + p.region.width / factor)),
           max(int(y0) + 1, round(y0 + p.region.height / factor)))
    image = Image.fromarray(canvas).crop(box)
    if image.size != (p.width, p.height):
        image = image.resize((p.width, p.height), Image.Resampling.LANCZOS)
    return np.asarray(image), sources


@router.get("/{exam_id}/{slide_number}/{region}/{size}/{rotation}/{quality_format}",
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, 400: {}, 401: {}, 403: {}, 404: {},
                       501: {}})
async def image(exam_id: str, slide_number: SlideNo, region: str, size: str, rotation: str, quality_format: str,
                user: User, ctx: Ctx) -> Response:
    require_exam(user, await ctx.exam(exam_id))
    _, view = await ctx.tiles.view(exam_id, slide_number)
    try:
        p = plan(view, region, size, rotation, quality_format)
    except IiifError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)
    pixels, sources = await compose(ctx.tiles, exam_id, slide_number, view, p)
    if p.mirror:
        pixels = pixels[:, ::-1]
    pixels = np.ascontiguousarray(np.rot90(pixels, k=-(p.rotation // 90)))  # clockwise
    source = next(s for s in ("placeholder", "computed", "scanned", "lr") if s in sources)
    body = await asyncio.to_thread(encode, pixels, p.media_type, ctx.settings.viewer.lr_tile_quality)
    return Response(body, media_type=p.media_type, headers={
        "X-Tile-Source": source, "Cache-Control": "no-store" if source == "placeholder" else "private, max-age=3600"})
