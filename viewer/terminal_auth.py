"""Who is calling the terminal API: a registered, active reading terminal, shown by its own key
(``Authorization: Bearer <key>`` and ``X-Terminal-Id``), never a user's token.

The registry keeps only the key's SHA-256 digest and compares digests in constant time
(``catalog.terminals``). Every authenticated call is a heartbeat; the write is skipped while
the last one is fresh, so downloading thousands of tiles does not write the catalog for each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from catalog.assignments import Assignments
from catalog.terminals import Terminals, UnknownTerminal
from distribution.hr_slides import HrSlides
from distribution.manifest import ExamManifests
from schemas.catalog import TerminalRecord, db_now
from schemas.ids import is_valid_id
from viewer.access import Ctx

TERMINAL_HEADER = "X-Terminal-Id"
HEARTBEAT_WRITE_EVERY = timedelta(seconds=5)


@dataclass
class TerminalApi:
    """The catalog views the terminal routes use, built once per viewer context."""

    terminals: Terminals
    manifests: ExamManifests


async def terminal_api(request: Request, ctx: Ctx) -> TerminalApi:  # async: no worker-thread hop
    api: TerminalApi | None = getattr(request.app.state, "terminal_api", None)
    if api is None or getattr(request.app.state, "terminal_api_of", None) is not ctx:
        db = ctx.catalog.db
        slides = HrSlides(ctx.catalog, ctx.store, ctx.settings.viewer.target_magnification)
        api = TerminalApi(Terminals(db), ExamManifests(Assignments(db), slides))
        request.app.state.terminal_api, request.app.state.terminal_api_of = api, ctx
    return api


Api = Annotated[TerminalApi, Depends(terminal_api)]


def _refused(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def current_terminal(request: Request, api: Api) -> TerminalRecord:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    terminal_id = request.headers.get(TERMINAL_HEADER, "")
    if scheme.lower() != "bearer" or not key.strip() or not terminal_id:
        raise _refused(f"a terminal signs in with its key: Authorization: Bearer <key> and {TERMINAL_HEADER}")
    # One answer for every refusal (unknown, retired, wrong key): nothing to probe with.
    refused = _refused("unknown terminal, wrong key or retired terminal")
    if not is_valid_id(terminal_id):
        raise refused
    terminal = await api.terminals.authenticate(terminal_id, key.strip())
    if terminal is None:
        raise refused
    now = db_now()
    if not terminal.online or terminal.last_heartbeat is None or now - terminal.last_heartbeat >= HEARTBEAT_WRITE_EVERY:
        try:
            terminal, _ = await api.terminals.heartbeat(terminal.terminal_id, now)
        except UnknownTerminal:  # removed this very moment
            raise refused from None
    return terminal


Terminal = Annotated[TerminalRecord, Depends(current_terminal)]
