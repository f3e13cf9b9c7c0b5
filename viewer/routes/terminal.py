"""The terminal API (SPEC 2, distribution): what a reading terminal downloads ahead of reading.

Signed in with the terminal's own key (``viewer.terminal_auth``), never a user's token;
every call is a heartbeat. A terminal sees only the exams assigned to it now (403 for any
other); answers and audit entries carry IDs only, never patient identity.

* ``POST /api/terminal/heartbeat``
* ``GET /api/terminal/assignments``: its open exams (done or reassigned ones drop out)
* ``GET /api/terminal/exams/{exam_id}/manifest``: every SR tile expected and those ready
* ``GET /api/terminal/tiles/{exam_id}/{slide_number}/{level}/{col}_{row}.png``: one hr-cache
  tile, with ``X-Content-SHA256`` and ``X-Tile-Source`` (computed or scanned)
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response
from pydantic import BaseModel

from distribution.manifest import NotAssignedHere, SlideNotInAssignment
from schemas.catalog import TerminalRecord, db_now
from schemas.ids import is_valid_id
from viewer.access import Ctx
from viewer.audit import audit
from viewer.terminal_auth import Api, Terminal

router = APIRouter(prefix="/api/terminal", tags=["terminal"])
SlideNo = Annotated[int, Path(ge=1, le=9999)]
Level = Annotated[int, Path(ge=0, le=64)]
TILE_NAME = re.compile(r"^(\d{1,7})_(\d{1,7})\.png$")
AUTH: dict[int | str, dict[str, Any]] = {401: {"description": "no, an unknown, a wrong or a retired terminal key"}}
FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"description": "the exam is not assigned to this terminal"}}
TILE_AUDIT_EVERY_S = 300.0  # tile downloads are audited once per slide and terminal per this long


class HeartbeatOut(BaseModel):
    terminal_id: str
    online: bool
    server_time: datetime


class AssignmentOut(BaseModel):
    exam_id: str
    slide_numbers: list[int]
    assigned_at: datetime | None
    revision: int


class AssignmentsOut(BaseModel):
    terminal_id: str
    assignments: list[AssignmentOut]


class LevelOut(BaseModel):
    level: int
    cols: int
    rows: int


class SlideOut(BaseModel):
    slide_number: int
    scale: int
    scanned: bool
    levels: list[LevelOut]
    expected: int
    present: list[tuple[int, int, int]]  # [level, col, row]
    complete: bool


class ManifestOut(BaseModel):
    exam_id: str
    slides: list[SlideOut]


def _actor(terminal: TerminalRecord) -> str:
    return f"terminal:{terminal.terminal_id}"


def _forbidden(exc: NotAssignedHere) -> HTTPException:
    return HTTPException(403, str(exc))


async def _denied(ctx: Ctx, terminal: TerminalRecord, action: str, exam_id: str,
                  slide_number: int | None = None) -> None:
    """Audit a refused read; an exam ID that is not even well-formed is not worth an entry."""
    if is_valid_id(exam_id):
        await audit(ctx.catalog, _actor(terminal), action, "denied", exam_id=exam_id, slide_number=slide_number)


@router.post("/heartbeat", response_model=HeartbeatOut, responses=AUTH)
async def heartbeat(terminal: Terminal) -> HeartbeatOut:
    """The terminal is alive (any call counts; this one says only that)."""
    return HeartbeatOut(terminal_id=terminal.terminal_id, online=True, server_time=db_now())


@router.get("/assignments", response_model=AssignmentsOut, responses=AUTH)
async def assignments(terminal: Terminal, api: Api) -> AssignmentsOut:
    """Open exams of this terminal; one that is done or was reassigned away is not listed (the
    terminal deletes its local copy)."""
    found = await api.manifests.open_assignments(terminal.terminal_id)
    return AssignmentsOut(terminal_id=terminal.terminal_id, assignments=[
        AssignmentOut(exam_id=a.exam_id, slide_numbers=sorted(a.slide_numbers), assigned_at=a.assigned_at,
                      revision=a.revision) for a in found])


@router.get("/exams/{exam_id}/manifest", response_model=ManifestOut, responses={**AUTH, **FORBIDDEN})
async def manifest(exam_id: str, terminal: Terminal, api: Api, ctx: Ctx) -> ManifestOut:
    try:
        slides = await api.manifests.manifest(exam_id, terminal.terminal_id)
    except NotAssignedHere as exc:
        await _denied(ctx, terminal, "terminal_manifest", exam_id)
        raise _forbidden(exc) from None
    await audit(ctx.catalog, _actor(terminal), "terminal_manifest", exam_id=exam_id, slides=len(slides))
    return ManifestOut(exam_id=exam_id, slides=[
        SlideOut(slide_number=m.slide.slide_number, scale=m.slide.scale, scanned=m.slide.scanned,
                 levels=[LevelOut(level=lv.level, cols=lv.cols, rows=lv.rows) for lv in m.slide.levels],
                 expected=m.slide.expected, present=m.present, complete=m.complete) for m in slides])


_tile_audits: dict[tuple[str, str, int], float] = {}


async def _audit_tiles(ctx: Ctx, terminal: TerminalRecord, exam_id: str, slide_number: int) -> None:
    """One audit entry per terminal, slide and ``TILE_AUDIT_EVERY_S`` (not one per tile)."""
    key, now = (terminal.terminal_id, exam_id, slide_number), time.monotonic()
    if _tile_audits.get(key, 0.0) > now:
        return
    if len(_tile_audits) > 10_000:
        _tile_audits.clear()
    _tile_audits[key] = now + TILE_AUDIT_EVERY_S
    await audit(ctx.catalog, _actor(terminal), "terminal_tiles", exam_id=exam_id, slide_number=slide_number)


@router.get("/tiles/{exam_id}/{slide_number}/{level}/{tile}",
            responses={200: {"content": {"image/png": {}}}, **AUTH, **FORBIDDEN,
                       404: {"description": "not in the hr-cache (yet), or not a slide of the assignment"}})
async def tile(exam_id: str, slide_number: SlideNo, level: Level, tile: str, terminal: Terminal, api: Api,
               ctx: Ctx) -> Response:
    """One SR tile ``<col>_<row>.png`` from the hr-cache. ``X-Content-SHA256``: of the body (the
    terminal checks what it stores); ``X-Tile-Source``: computed or scanned."""
    match = TILE_NAME.match(tile)
    if match is None:
        raise HTTPException(404, f"tile name {tile[:40]!r} is not <col>_<row>.png")
    col, row = int(match[1]), int(match[2])
    try:
        found = await api.manifests.tile(exam_id, slide_number, level, col, row, terminal.terminal_id)
    except NotAssignedHere as exc:
        await _denied(ctx, terminal, "terminal_tiles", exam_id, slide_number)
        raise _forbidden(exc) from None
    except SlideNotInAssignment as exc:
        raise HTTPException(404, str(exc)) from None
    if found is None:
        raise HTTPException(404, f"tile {level}/{col}_{row} of slide {slide_number} is not in the hr-cache")
    body, source = found
    await _audit_tiles(ctx, terminal, exam_id, slide_number)
    return Response(body, media_type="image/png",
                    headers={"X-Content-SHA256": hashlib.sha256(body).hexdigest(), "X-Tile-Source": source,
                             "Cache-Control": "private, max-age=3600"})
