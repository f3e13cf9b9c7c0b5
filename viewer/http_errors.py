"""Bad input becomes a clear 4xx, never a 500 or a stack trace; and request bodies are read
with a size limit."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from minio.error import S3Error
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from catalog.errors import PermanentError, ReportConflict, UnknownExam, UnknownImage, UnknownUser, UserExists
from schemas.registry import safe_location, safe_message
from viewer.deepzoom import TileOutOfRange
from viewer.passwords import WeakPassword
from viewer.tile_service import SlideUnavailable

log = structlog.get_logger(__name__)


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"body larger than {limit} bytes")
    return bytes(body)


def validation_detail(exc: ValidationError | RequestValidationError) -> str:
    """Which fields are wrong and why, never their values (they may be report text) nor a key
    the request made up (it may be a patient's name)."""
    parts = []
    for error in exc.errors()[:10]:
        loc = tuple(p for p in error.get("loc", ()) if p != "body")
        where = safe_location(loc, str(error.get("type", ""))) or "body"
        parts.append(f"{where}: {safe_message(error) if 'msg' in error else 'invalid'}")
    return "invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    def reply(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(422, validation_detail(exc))

    @app.exception_handler(PermanentError)
    async def permanent(_: Request, exc: PermanentError) -> JSONResponse:
        if isinstance(exc, UnknownExam | UnknownImage | UnknownUser):
            return reply(404, str(exc))
        if isinstance(exc, ReportConflict | UserExists):
            return reply(409, str(exc))
        return reply(422, str(exc))

    @app.exception_handler(TileOutOfRange)
    async def out_of_range(_: Request, exc: TileOutOfRange) -> JSONResponse:
        return reply(404, str(exc))

    @app.exception_handler(SlideUnavailable)
    async def unavailable(_: Request, exc: SlideUnavailable) -> JSONResponse:
        return reply(404, str(exc))

    @app.exception_handler(WeakPassword)
    async def weak(_: Request, exc: WeakPassword) -> JSONResponse:
        return reply(422, str(exc))

    @app.exception_handler(S3Error)
    @app.exception_handler(PyMongoError)
    @app.exception_handler(ConnectionError)
    async def backend_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("viewer.backend_unavailable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse({"detail": "storage or catalog unavailable; retry shortly"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("viewer.unexpected_error", path=request.url.path)
        return reply(500, "internal error; the server logged it")
