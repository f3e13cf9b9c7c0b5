"""One slide: its description, the Deep Zoom descriptor and tiles, and live tile news (SSE)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from schemas.layout import ALLOWED_SCALES
from schemas.topics import Priority
from viewer.access import Ctx, User, require_exam
from viewer.audit import audit
from viewer.deepzoom import TileOutOfRange
from viewer.prefetch import viewport_tiles

router = APIRouter(prefix="/api/slides", tags=["slides"])
SlideNo = Annotated[int, Path(ge=1, le=9999)]
Level = Annotated[int, Path(ge=0, le=64)]
TILE_NAME = re.compile(r"^(\d{1,7})_(\d{1,7})\.(jpeg|jpg|png)$")
KEEPALIVE_S = 15.0
CONSISTENCY_HEADER = "X-Tile-Consistency-dB"
CACHEABLE = "private, max-age=3600"  # LR and hr-cache tiles do not change under a key
MODE = "low-resolution: levels above the stored LR are computed on demand, neighbours prefetched"


class LevelOut(BaseModel):
    level: int
    magnification: float | None
    kind: str


class SlideOut(BaseModel):
    exam_id: str
    slide_number: int
    width: int
    height: int
    lr_width: int
    lr_height: int
    lr_magnification: float | None
    scale: int
    max_level: int
    lr_level: int
    levels: list[LevelOut]
    dzi_url: str
    events_url: str
    reading_mode: str
    consistency_url: str
    # Computed tiles below this agree too little with the stored LR and are flagged.
    consistency_threshold_db: float


def _base(exam_id: str, slide_number: int) -> str:
    return f"/api/slides/{exam_id}/{slide_number}"


async def _allowed(ctx: Ctx, user: User, exam_id: str) -> None:
    require_exam(user, await ctx.exam(exam_id))


@router.get("/{exam_id}/{slide_number}", response_model=SlideOut, responses={401: {}, 403: {}, 404: {}})
async def open_slide(exam_id: str, slide_number: SlideNo, user: User, ctx: Ctx) -> SlideOut:
    """Opening a slide is audited and counts as a read of its LR image (tiering usage)."""
    await _allowed(ctx, user, exam_id)
    image, view = await ctx.tiles.view(exam_id, slide_number)
    ctx.tiles.warm(exam_id, slide_number)  # its tiles are asked for next
    await ctx.catalog.record_access(image)
    await audit(ctx.catalog, user.username, "slide_open", exam_id=exam_id, slide_number=slide_number,
                scale=view.scale)
    base = _base(exam_id, slide_number)
    return SlideOut(exam_id=exam_id, slide_number=slide_number, width=view.width, height=view.height,
                    lr_width=view.lr_width, lr_height=view.lr_height, lr_magnification=view.lr_magnification,
                    scale=view.scale, max_level=view.max_level, lr_level=view.lr_level,
                    levels=[LevelOut.model_validate(level) for level in view.levels()],
                    dzi_url=f"{base}/slide.dzi", events_url=f"{base}/events",
                    reading_mode=MODE, consistency_url=f"{base}/consistency",
                    consistency_threshold_db=ctx.settings.compute.consistency_threshold_db)


@router.get("/{exam_id}/{slide_number}/slide.dzi", responses={200: {"content": {"application/xml": {}}},
                                                             401: {}, 403: {}, 404: {}})
async def dzi(exam_id: str, slide_number: SlideNo, user: User, ctx: Ctx) -> Response:
    await _allowed(ctx, user, exam_id)
    _, view = await ctx.tiles.view(exam_id, slide_number)
    return Response(view.dzi("jpeg"), media_type="application/xml")


@router.get("/{exam_id}/{slide_number}/slide_files/{level}/{tile}",
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, 401: {}, 403: {}, 404: {}})
async def tile(exam_id: str, slide_number: SlideNo, level: Level, tile: str, user: User, ctx: Ctx,
               view: str | None = None) -> Response:
    """``X-Tile-Source``: lr, computed, scanned or placeholder (not ready: LR upsampled, not
    cached). ``X-Tile-Consistency-dB`` (computed tiles): the tile box-downsampled to the stored
    magnification against the stored LR, PSNR. ``view=lr``: the LR version at any level
    (comparison view)."""
    match = TILE_NAME.match(tile)
    if match is None:
        raise HTTPException(404, f"tile name {tile[:40]!r} is not <col>_<row>.<jpeg|png>")
    if view not in (None, "lr"):
        raise HTTPException(422, "view must be 'lr' or absent")
    await _allowed(ctx, user, exam_id)
    col, row, fmt = int(match[1]), int(match[2]), match[3]
    result = await ctx.tiles.tile(exam_id, slide_number, level, col, row, fmt, lr_only=view == "lr",
                                  viewer=user.username)
    headers = {"X-Tile-Source": result.source,
               "Cache-Control": "no-store" if result.source == "placeholder" else CACHEABLE}
    if result.consistency_db is not None:
        headers[CONSISTENCY_HEADER] = f"{result.consistency_db:.2f}"
    return Response(result.body, media_type=result.media_type, headers=headers)


class ConsistencyOut(BaseModel):
    scale: int
    threshold_db: float
    scanned: bool  # tiles cut from a real HR scan: measured, nothing to compare
    tiles: dict[str, float]  # "<level>/<col>_<row>" -> dB, computed tiles of the hr-cache
    below: int  # tiles under threshold_db


@router.get("/{exam_id}/{slide_number}/consistency", response_model=ConsistencyOut,
            responses={401: {}, 403: {}, 404: {}, 422: {}})
async def consistency(exam_id: str, slide_number: SlideNo, user: User, ctx: Ctx,
                      scale: int | None = None) -> ConsistencyOut:
    """The slide's consistency map: each computed tile box-downsampled to the stored
    magnification and compared with the stored LR (PSNR, dB). ``scale``: of the HR pyramid
    (default: the one the viewer shows)."""
    if scale is not None and scale not in ALLOWED_SCALES:
        raise HTTPException(422, f"scale must be one of {ALLOWED_SCALES}")
    await _allowed(ctx, user, exam_id)
    _, view = await ctx.tiles.view(exam_id, slide_number)
    scale = scale or view.scale
    tiles = await ctx.consistency.read(exam_id, slide_number, scale)
    threshold = ctx.settings.compute.consistency_threshold_db
    return ConsistencyOut(scale=scale, threshold_db=threshold, scanned=tiles is None, tiles=tiles or {},
                          below=sum(value < threshold for value in (tiles or {}).values()))


@router.get("/{exam_id}/{slide_number}/events", responses={200: {"content": {"text/event-stream": {}}},
                                                          401: {}, 403: {}, 404: {}})
async def events(exam_id: str, slide_number: SlideNo, request: Request, user: User, ctx: Ctx) -> StreamingResponse:
    """Server-Sent Events: ``tiles`` (computed tiles now in the hr-cache) and ``failed``."""
    await _allowed(ctx, user, exam_id)
    await ctx.tiles.view(exam_id, slide_number)  # 404 before the stream starts
    await audit(ctx.catalog, user.username, "tile_session", exam_id=exam_id, slide_number=slide_number)

    async def stream() -> AsyncIterator[str]:
        with ctx.hub.subscribe(exam_id, slide_number) as queue:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                try:
                    news = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield news.sse()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


class ViewportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: int = Field(ge=0, le=64)
    x: int = Field(ge=-(1 << 31), le=1 << 31)
    y: int = Field(ge=-(1 << 31), le=1 << 31)
    width: int = Field(gt=0, le=1 << 16)
    height: int = Field(gt=0, le=1 << 16)


class ViewportOut(BaseModel):
    mode: str
    visible: int
    ring: int
    prefetching: int
    cancelled: int = 0  # tiles asked earlier that this move left and nobody else wants


@router.post("/{exam_id}/{slide_number}/viewport", response_model=ViewportOut,
             responses={401: {}, 403: {}, 404: {}, 422: {}})
async def viewport(exam_id: str, slide_number: SlideNo, body: ViewportIn, user: User, ctx: Ctx) -> ViewportOut:
    """The browser says what it shows (pixels of ``level``); on super-resolution levels the
    ring of neighbouring tiles not yet in the hr-cache is asked for at a priority below
    interactive, so that a pan lands on computed tiles."""
    await _allowed(ctx, user, exam_id)
    _, view = await ctx.tiles.view(exam_id, slide_number)
    if body.level > view.max_level:
        raise HTTPException(404, f"level {body.level} is outside 0..{view.max_level}")
    wanted = viewport_tiles(view, body.level, body.x, body.y, body.width, body.height)
    # The user's view is what they asked for since their last report (tile GETs while
    # panning) plus this report's tiles; what they left and nobody else wants is cancelled.
    cancelled = await ctx.tiles.view_moved(user.username, exam_id, slide_number, wanted.visible + wanted.ring)
    # Tiles on screen are asked again if they are neither cached nor in flight (one of the
    # user's other pages may have cancelled them), then the ring at a lower priority.
    await ctx.tiles.prefetch(exam_id, slide_number, wanted.visible, Priority.INTERACTIVE, viewer=user.username)
    asked = await ctx.tiles.prefetch(exam_id, slide_number, wanted.ring, Priority.DISTRIBUTION,
                                     viewer=user.username)
    return ViewportOut(mode=MODE, visible=len(wanted.visible), ring=len(wanted.ring), prefetching=asked,
                       cancelled=cancelled)


__all__ = ["router", "TileOutOfRange"]
