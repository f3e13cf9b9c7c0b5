"""A small server that implements the terminal API contract (issue 12) and the few viewer
routes the terminal's local server talks to, for the terminal unit tests (served through
httpx's ASGI transport: no sockets, no sleeps). Holds no tests itself."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

TERMINAL_ID = "T1"
TERMINAL_KEY = "k" * 43
USER_TOKEN = "user-token"  # may read every exam the fake knows
OTHER_TOKEN = "other-token"  # a signed-in user who may read no exam


def png(tag: str) -> bytes:
    """Distinct bytes per tile (the terminal never decodes them)."""
    return b"\x89PNG\r\n\x1a\n" + tag.encode()


@dataclass
class FakeSlide:
    number: int
    levels: dict[int, tuple[int, int]]  # level -> (cols, rows)
    scanned: bool = False
    present: set[tuple[int, int, int]] = field(default_factory=set)

    @property
    def all_tiles(self) -> list[tuple[int, int, int]]:
        return [(level, c, r) for level, (cols, rows) in self.levels.items() for c in range(cols) for r in range(rows)]


@dataclass
class FakeServer:
    exams: dict[str, list[FakeSlide]] = field(default_factory=dict)
    assigned: list[str] = field(default_factory=list)
    revision: int = 1
    down: bool = False  # every terminal call answers 503
    bad_checksum: set[tuple[str, int, int, int, int]] = field(default_factory=set)
    tile_calls: int = 0
    exam_checks: int = 0

    def add_exam(self, exam_id: str, *, slides: int = 1, levels: dict[int, tuple[int, int]] | None = None,
                 present: bool = True, scanned: bool = False) -> None:
        grid = levels or {11: (2, 1), 12: (2, 2)}
        self.exams[exam_id] = []
        for n in range(1, slides + 1):
            slide = FakeSlide(n, dict(grid), scanned=scanned)
            if present:
                slide.present = set(slide.all_tiles)
            self.exams[exam_id].append(slide)
        self.assigned.append(exam_id)

    def tile_bytes(self, exam_id: str, slide: int, level: int, col: int, row: int) -> bytes:
        return png(f"{exam_id}/{slide}/{level}/{col}_{row}")

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app())

    def app(self) -> FastAPI:
        app = FastAPI()

        def terminal(authorization: str | None, terminal_id: str | None) -> None:
            if self.down:
                raise HTTPException(503, "restarting")
            if authorization != f"Bearer {TERMINAL_KEY}" or terminal_id != TERMINAL_ID:
                raise HTTPException(401, "unknown terminal or wrong key")

        def exam_of(exam_id: str) -> list[FakeSlide]:
            if exam_id not in self.assigned:
                raise HTTPException(403, "not assigned to this terminal")
            return self.exams[exam_id]

        @app.post("/api/terminal/heartbeat")
        async def heartbeat(authorization: str | None = Header(None), x_terminal_id: str | None = Header(None)) -> dict[str, Any]:
            terminal(authorization, x_terminal_id)
            return {"terminal_id": TERMINAL_ID, "online": True, "server_time": "2024-01-01T00:00:00+00:00"}

        @app.get("/api/terminal/assignments")
        async def assignments(authorization: str | None = Header(None),
                              x_terminal_id: str | None = Header(None)) -> dict[str, Any]:
            terminal(authorization, x_terminal_id)
            return {"terminal_id": TERMINAL_ID, "assignments": [
                {"exam_id": e, "slide_numbers": [s.number for s in self.exams[e]], "assigned_at": None,
                 "revision": self.revision} for e in self.assigned]}

        @app.get("/api/terminal/exams/{exam_id}/manifest")
        async def manifest(exam_id: str, authorization: str | None = Header(None),
                           x_terminal_id: str | None = Header(None)) -> dict[str, Any]:
            terminal(authorization, x_terminal_id)
            return {"exam_id": exam_id, "slides": [
                {"slide_number": s.number, "scale": 8, "scanned": s.scanned,
                 "levels": [{"level": level, "cols": c, "rows": r} for level, (c, r) in s.levels.items()],
                 "expected": len(s.all_tiles), "present": sorted(s.present),
                 "complete": len(s.present) == len(s.all_tiles)} for s in exam_of(exam_id)]}

        @app.get("/api/terminal/tiles/{exam_id}/{slide_number}/{level}/{tile}")
        async def tile(exam_id: str, slide_number: int, level: int, tile: str, authorization: str | None = Header(None),
                       x_terminal_id: str | None = Header(None)) -> Response:
            terminal(authorization, x_terminal_id)
            self.tile_calls += 1
            col, row = (int(x) for x in tile.removesuffix(".png").split("_"))
            slide = next(s for s in exam_of(exam_id) if s.number == slide_number)
            if (level, col, row) not in slide.present:
                raise HTTPException(404, "not in the hr-cache yet")
            data = self.tile_bytes(exam_id, slide_number, level, col, row)
            digest = hashlib.sha256(data).hexdigest()
            if (exam_id, slide_number, level, col, row) in self.bad_checksum:
                digest = hashlib.sha256(b"something else").hexdigest()
            return Response(data, media_type="image/png", headers={
                "X-Content-SHA256": digest, "X-Tile-Source": "scanned" if slide.scanned else "computed"})

        # ---- the viewer's user API, as far as the terminal's local server uses it ----

        def user(authorization: str | None) -> str:
            if authorization not in (f"Bearer {USER_TOKEN}", f"Bearer {OTHER_TOKEN}"):
                raise HTTPException(401, "Not signed in")
            return authorization.split()[1]

        @app.get("/api/me")
        async def me(authorization: str | None = Header(None)) -> dict[str, Any]:
            return {"username": user(authorization)}

        @app.get("/api/exams/{exam_id}")
        async def exam(exam_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
            self.exam_checks += 1
            if user(authorization) != USER_TOKEN:
                raise HTTPException(403, f"exam {exam_id} is not assigned to you or your department")
            return {"exam_id": exam_id}

        @app.get("/api/slides/{exam_id}/{slide_number}")
        async def slide(exam_id: str, slide_number: int, authorization: str | None = Header(None)) -> dict[str, Any]:
            user(authorization)
            return {"exam_id": exam_id, "slide_number": slide_number, "lr_magnification": 5.0, "scale": 8,
                    "reading_mode": "low-resolution: computed on demand"}

        @app.get("/api/slides/{exam_id}/{slide_number}/slide_files/{level}/{tile}")
        async def viewer_tile(exam_id: str, slide_number: int, level: int, tile: str,
                              authorization: str | None = Header(None)) -> Response:
            user(authorization)
            return Response(png(f"server:{level}/{tile}"), media_type="image/png", headers={"X-Tile-Source": "lr"})

        @app.get("/api/slides/{exam_id}/{slide_number}/events")
        async def events(exam_id: str, slide_number: int) -> StreamingResponse:
            async def stream() -> AsyncIterator[bytes]:
                yield b"event: tile\ndata: {\"n\": 1}\n\n"
                yield b"event: tile\ndata: {\"n\": 2}\n\n"
            return StreamingResponse(stream(), media_type="text/event-stream")

        @app.post("/api/echo")
        async def echo(request: Request) -> JSONResponse:
            return JSONResponse({"body": (await request.body()).decode(), "query": str(request.url.query)})

        return app
