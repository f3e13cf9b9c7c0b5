"""The terminal's client of the server's terminal API (``/api/terminal/...``).

Every call carries the terminal's own key (never a user's token) and counts as a heartbeat
on the server. Transient failures (connection refused, timeouts, 5xx) are retried with
capped backoff and then raised as ``ServerUnavailable``; 401 and 403 are not retried.
Errors name exam IDs and tile coordinates only, never patient identity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from core.retry import backoff_delays
from terminal.cache import TileKey

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class TerminalApiError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(TerminalApiError):
    """401: the terminal ID or key is wrong, unknown or retired."""


class NotAssigned(TerminalApiError):
    """403: the exam is not (or no longer) assigned to this terminal."""


class ServerUnavailable(TerminalApiError):
    """The server could not be reached or failed (5xx, timeout); worth trying again later."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Assignment(_Model):
    exam_id: str
    slide_numbers: list[int]
    assigned_at: str | None = None
    revision: int = 0


class Assignments(_Model):
    terminal_id: str
    assignments: list[Assignment]


class LevelGrid(_Model):
    level: int
    cols: int
    rows: int


class SlideManifest(_Model):
    slide_number: int
    scale: int
    scanned: bool
    levels: list[LevelGrid]
    expected: int
    present: list[tuple[int, int, int]]
    complete: bool


class ExamManifest(_Model):
    exam_id: str
    slides: list[SlideManifest]


_M = TypeVar("_M", bound=_Model)


@dataclass(frozen=True)
class RemoteTile:
    data: bytes
    sha256: str
    source: str


class TerminalClient:
    def __init__(self, server_url: str, terminal_id: str, key: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: httpx.Timeout = DEFAULT_TIMEOUT, attempts: int = 4, backoff_base_s: float = 0.5,
                 backoff_cap_s: float = 10.0, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.terminal_id = terminal_id
        self._attempts = attempts
        self._base = backoff_base_s
        self._cap = backoff_cap_s
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=server_url.rstrip("/"), transport=transport, timeout=timeout,
                                       headers={"Authorization": f"Bearer {key}", "X-Terminal-Id": terminal_id})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def heartbeat(self) -> dict[str, object]:
        answer = await self._call("POST", "/api/terminal/heartbeat", what="heartbeat")
        data: dict[str, object] = answer.json()
        return data

    async def assignments(self) -> list[Assignment]:
        answer = await self._call("GET", "/api/terminal/assignments", what="assignments")
        return self._parse(Assignments, answer, "assignments").assignments

    async def manifest(self, exam_id: str) -> ExamManifest:
        answer = await self._call("GET", f"/api/terminal/exams/{exam_id}/manifest", what=f"manifest of exam {exam_id}")
        return self._parse(ExamManifest, answer, f"manifest of exam {exam_id}")

    async def tile(self, key: TileKey) -> RemoteTile | None:
        """The HR tile, or None while it is not (yet) in the server's hr-cache (404)."""
        path = f"/api/terminal/tiles/{key.exam_id}/{key.slide_number}/{key.level}/{key.col}_{key.row}.png"
        answer = await self._call("GET", path, what=f"tile {key}", missing_ok=True)
        if answer.status_code == 404:
            return None
        digest = answer.headers.get("X-Content-SHA256")
        if not digest:
            raise TerminalApiError(f"tile {key}: the server sent no X-Content-SHA256; it cannot be verified")
        return RemoteTile(data=answer.content, sha256=digest, source=answer.headers.get("X-Tile-Source", "computed"))

    async def _call(self, method: str, path: str, *, what: str, missing_ok: bool = False) -> httpx.Response:
        async def once() -> httpx.Response:
            try:
                answer = await self._http.request(method, path)
            except httpx.TimeoutException as exc:
                raise ServerUnavailable(f"{what}: the server did not answer in time ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise ServerUnavailable(f"{what}: cannot reach {self._http.base_url} ({type(exc).__name__}: {exc})") from exc
            if answer.status_code >= 500:
                raise ServerUnavailable(f"{what}: server error HTTP {answer.status_code}", answer.status_code)
            return answer

        # Retried quietly: the sync loop logs an outage once, not every attempt.
        delays = backoff_delays(self._base, self._cap)
        for attempt in range(1, self._attempts + 1):
            try:
                answer = await once()
                break
            except ServerUnavailable:
                if attempt == self._attempts:
                    raise
                await self._sleep(next(delays))
        if answer.status_code == 401:
            raise Unauthorized(f"{what}: the server refused terminal {self.terminal_id!r} (HTTP 401: wrong or unknown key, "
                               "or the terminal was retired); check --id and --key-file, or rotate the key", 401)
        if answer.status_code == 403:
            raise NotAssigned(f"{what}: not assigned to terminal {self.terminal_id!r} (HTTP 403)", 403)
        if answer.status_code == 404 and missing_ok:
            return answer
        if answer.status_code >= 400:
            raise TerminalApiError(f"{what}: HTTP {answer.status_code} {_detail(answer)}", answer.status_code)
        return answer

    @staticmethod
    def _parse(model: type[_M], answer: httpx.Response, what: str) -> _M:
        try:
            return model.model_validate_json(answer.content)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
            raise TerminalApiError(f"{what}: the server's answer does not fit the terminal API (fields: {fields})") from exc


def _detail(answer: httpx.Response) -> str:
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail)[:200] if detail else answer.reason_phrase

