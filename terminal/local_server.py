"""The loopback server the pathologist's browser uses on a reading workstation.

It is a reverse proxy to the diagnosis server (UI, /static, /vendor, every /api call, the
SSE tile news streamed chunk by chunk) with one exception: HR tiles of a slide held in the
local cache are answered from disk, after the user's own bearer token was checked against
the server for that exam (the verdict kept 60 s). The slide description's ``reading_mode``
says high-resolution mode when the slide is complete here. ``/terminal/status`` and
``/terminal/exams/{exam}`` tell the UI and the operator where the local copy stands.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from terminal.cache import TileKey
from terminal.sync import Syncer

TILE_NAME = re.compile(r"^(\d{1,7})_(\d{1,7})\.(jpeg|jpg|png)$")
NUMBER = re.compile(r"^\d{1,7}$")
VERDICT_TTL_S = 60.0
_MAX_VERDICTS = 10_000
# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy recomputes.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade", "host", "content-length"})
UPSTREAM_TIMEOUT = httpx.Timeout(60.0, connect=5.0)  # SSE sends a keep-alive every 15 s
LOCAL_TILE_CACHE = "private, max-age=3600"


class UserAuth:
    """Asks the server whether a user's token may read something; remembers the answer 60 s
    per (token digest, path) so that a screen of tiles costs one call, not hundreds."""

    def __init__(self, http: httpx.AsyncClient, *, ttl_s: float = VERDICT_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._http = http
        self._ttl = ttl_s
        self._clock = clock
        self._verdicts: dict[tuple[str, str], tuple[float, int, str]] = {}
        self.upstream_checks = 0

    async def check(self, request: Request, path: str) -> Response | None:
        """None when allowed; else the response to send (401/403/404 as the server said)."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            return JSONResponse({"detail": "Not signed in: this needs a bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        key = (hashlib.sha256(header.encode()).hexdigest(), path)  # never the token itself
        now = self._clock()
        cached = self._verdicts.get(key)
        if cached is None or cached[0] <= now:
            try:
                self.upstream_checks += 1
                answer = await self._http.get(path, headers={"Authorization": header})
            except httpx.TransportError as exc:
                return JSONResponse({"detail": f"the terminal cannot reach the diagnosis server to check access "
                                               f"({type(exc).__name__}); try again"}, status_code=502)
            if answer.status_code not in (200, 401, 403, 404):
                return JSONResponse({"detail": f"the diagnosis server could not check access (HTTP {answer.status_code})"},
                                    status_code=502)
            cached = (now + self._ttl, answer.status_code, _detail(answer))
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts = {k: v for k, v in self._verdicts.items() if v[0] > now}
            self._verdicts[key] = cached
        if cached[1] == 200:
            return None
        headers = {"WWW-Authenticate": "Bearer"} if cached[1] == 401 else None
        return JSONResponse({"detail": cached[2]}, status_code=cached[1], headers=headers)


def _detail(answer: httpx.Response) -> str:
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else f"HTTP {answer.status_code}"


def _forwarded_headers(request: Request) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]


def _response_headers(answer: httpx.Response, *, decoded: bool) -> list[tuple[bytes, bytes]]:
    drop = HOP_BY_HOP | {"content-encoding"} if decoded else HOP_BY_HOP
    return [(k, v) for k, v in answer.headers.raw if k.decode("latin-1").lower() not in drop]


def create_app(syncer: Syncer, *, server_url: str, terminal_id: str,
               transport: httpx.AsyncBaseTransport | None = None,
               clock: Callable[[], float] = time.monotonic) -> FastAPI:
    http = httpx.AsyncClient(base_url=server_url.rstrip("/"), transport=transport, timeout=UPSTREAM_TIMEOUT)
    auth = UserAuth(http, clock=clock)
    cache = syncer.cache

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await http.aclose()

    app = FastAPI(title="slidestream terminal", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.auth = auth

    async def upstream(request: Request, *, stream: bool) -> httpx.Response | Response:
        body = await request.body()
        outgoing = http.build_request(request.method, httpx.URL(path=request.url.path, query=request.url.query.encode()),
                                      headers=_forwarded_headers(request), content=body or None)
        try:
            return await http.send(outgoing, stream=stream)
        except httpx.TransportError as exc:
            return JSONResponse({"detail": f"the terminal cannot reach the diagnosis server at {server_url} "
                                           f"({type(exc).__name__}); local high-resolution tiles still work "
                                           "for exams already opened"}, status_code=502)

    async def proxy(request: Request) -> Response:
        answer = await upstream(request, stream=True)
        if isinstance(answer, Response):
            return answer
        # Raw bytes, as they come: the SSE stream reaches the browser event by event.
        response = StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                                     background=BackgroundTask(answer.aclose))
        response.raw_headers = _response_headers(answer, decoded=False)
        return response

    @app.get("/terminal/status")
    async def status(request: Request) -> Response:
        refused = await auth.check(request, "/api/me")
        return refused or JSONResponse(syncer.snapshot(terminal_id))

    @app.get("/terminal/exams/{exam_id}")
    async def exam_status(exam_id: str, request: Request) -> Response:
        refused = await auth.check(request, f"/api/exams/{exam_id}")
        return refused or JSONResponse(syncer.exam_view(exam_id))

    @app.get("/api/slides/{exam_id}/{slide_number}/slide_files/{level}/{tile}")
    async def tile(exam_id: str, slide_number: str, level: str, tile: str, request: Request) -> Response:
        key = _local_key(exam_id, slide_number, level, tile, request)
        if key is None:
            return await proxy(request)
        refused = await auth.check(request, f"/api/exams/{exam_id}")
        if refused is not None:
            return refused
        local = cache.read(key)
        if local is None:  # dropped as corrupt just now: the server answers this once
            return await proxy(request)
        return Response(local.data, media_type="image/png",
                        headers={"X-Tile-Source": local.source, "X-Served-By": "terminal",
                                 "Cache-Control": LOCAL_TILE_CACHE})

    def _local_key(exam_id: str, slide_number: str, level: str, tile: str, request: Request) -> TileKey | None:
        match = TILE_NAME.match(tile)
        if match is None or not NUMBER.match(slide_number) or not NUMBER.match(level) or "view" in request.query_params:
            return None  # odd names and the LR comparison view: the server answers
        slide = cache.slide(exam_id, int(slide_number))
        if slide is None or int(level) not in slide.levels:
            return None
        key = TileKey(exam_id, int(slide_number), int(level), int(match[1]), int(match[2]))
        return key if cache.has(key) else None

    @app.get("/api/slides/{exam_id}/{slide_number}")
    async def slide_info(exam_id: str, slide_number: str, request: Request) -> Response:
        answer = await upstream(request, stream=False)
        if isinstance(answer, Response):
            return answer
        headers = dict((k.decode("latin-1"), v.decode("latin-1")) for k, v in _response_headers(answer, decoded=True))
        slide = cache.slide(exam_id, int(slide_number)) if NUMBER.match(slide_number) else None
        state = cache.exam(exam_id) if slide is not None else None
        if answer.status_code != 200 or slide is None or not slide.complete or state is None or state.expired:
            return Response(answer.content, status_code=answer.status_code, headers=headers)
        info = answer.json()
        mag = info.get("lr_magnification")
        hr = f"{mag * info.get('scale', slide.scale):g}x" if isinstance(mag, (int, float)) else "full-resolution"
        source = "scanned" if slide.scanned else "computed"
        info["reading_mode"] = f"high-resolution: {hr} tiles from this workstation's local copy ({source})"
        headers.pop("content-type", None)
        return JSONResponse(info, status_code=200, headers=headers)

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def everything_else(path: str, request: Request) -> Response:
        return await proxy(request)

    return app

