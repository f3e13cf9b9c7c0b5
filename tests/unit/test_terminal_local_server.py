"""The terminal's loopback server: local HR tiles after a user check, everything else
proxied to the diagnosis server (the fake of test_terminal_fakes, over ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from test_terminal_fakes import OTHER_TOKEN, TERMINAL_ID, TERMINAL_KEY, USER_TOKEN, FakeServer

from terminal.cache import LocalCache
from terminal.client import TerminalClient
from terminal.local_server import create_app
from terminal.sync import Syncer

USER = {"Authorization": f"Bearer {USER_TOKEN}"}
OTHER = {"Authorization": f"Bearer {OTHER_TOKEN}"}
LOCAL_TILE = "/api/slides/E1/1/slide_files/12/1_0.png"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeServer, Syncer, Clock]]:
    server = FakeServer()
    server.add_exam("E1")
    server.add_exam("E2", present=False)
    cache = LocalCache(tmp_path, max_bytes=1 << 30, min_free_bytes=0, retention_days=14).open()
    client = TerminalClient("http://server", TERMINAL_ID, TERMINAL_KEY, transport=server.transport())
    syncer = Syncer(client, cache, heartbeat_s=15, poll_s=3, concurrency=2)
    assert not (await syncer.poll()).complete  # E1 complete locally, E2 waits for the server
    clock = Clock()
    app = create_app(syncer, server_url="http://server", terminal_id=TERMINAL_ID, transport=server.transport(),
                     clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://terminal") as browser:
        yield browser, server, syncer, clock
    await client.aclose()
    cache.close()


async def test_a_local_tile_is_served_from_the_cache_with_its_headers(setup) -> None:  # type: ignore[no-untyped-def]
    browser, server, _, _ = setup
    for ext in ("png", "jpeg"):  # HR tiles are PNG whatever the extension the viewer asks for
        answer = await browser.get(LOCAL_TILE.replace(".png", f".{ext}"), headers=USER)
        assert answer.status_code == 200
        assert answer.content == server.tile_bytes("E1", 1, 12, 1, 0)
        assert answer.headers["X-Served-By"] == "terminal"
        assert answer.headers["X-Tile-Source"] == "computed"
        assert answer.headers["Cache-Control"].startswith("private")
        assert answer.headers["Content-Type"] == "image/png"


async def test_tiles_not_held_locally_are_proxied_to_the_server(setup) -> None:  # type: ignore[no-untyped-def]
    browser, _, _, _ = setup
    for path in ("/api/slides/E1/1/slide_files/9/0_0.jpeg",  # an LR level
                 "/api/slides/E2/1/slide_files/12/0_0.png",  # still being computed
                 LOCAL_TILE + "?view=lr"):  # the comparison view asks for the LR version
        answer = await browser.get(path, headers=USER)
        assert answer.status_code == 200, path
        assert answer.headers["X-Tile-Source"] == "lr" and "X-Served-By" not in answer.headers
        assert answer.content.startswith(b"\x89PNG") and b"server:" in answer.content


async def test_local_tiles_need_a_user_allowed_to_read_the_exam(setup) -> None:  # type: ignore[no-untyped-def]
    browser, server, _, clock = setup
    anonymous = await browser.get(LOCAL_TILE)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
    bogus = await browser.get(LOCAL_TILE, headers={"Authorization": "Bearer expired"})
    assert bogus.status_code == 401 and bogus.json()["detail"] == "Not signed in"
    refused = await browser.get(LOCAL_TILE, headers=OTHER)
    assert refused.status_code == 403 and "not assigned to you" in refused.json()["detail"]
    assert "X-Served-By" not in refused.headers

    checks = server.exam_checks
    for _ in range(5):
        assert (await browser.get(LOCAL_TILE, headers=USER)).status_code == 200
    assert server.exam_checks == checks + 1  # one check per minute, not per tile
    clock.now += 61
    assert (await browser.get(LOCAL_TILE, headers=USER)).status_code == 200
    assert server.exam_checks == checks + 2


async def test_reading_mode_says_high_resolution_only_when_complete_here(setup) -> None:  # type: ignore[no-untyped-def]
    browser, _, _, _ = setup
    complete = (await browser.get("/api/slides/E1/1", headers=USER)).json()
    assert complete["reading_mode"] == "high-resolution: 40x tiles from this workstation's local copy (computed)"
    waiting = (await browser.get("/api/slides/E2/1", headers=USER)).json()
    assert waiting["reading_mode"].startswith("low-resolution")
    assert (await browser.get("/api/slides/E1/1")).status_code == 401  # the server's own check, passed through


async def test_terminal_status_and_exam_state_need_a_signed_in_user(setup) -> None:  # type: ignore[no-untyped-def]
    browser, _, _, _ = setup
    assert (await browser.get("/terminal/status")).status_code == 401
    assert (await browser.get("/terminal/exams/E1", headers=OTHER)).status_code == 403
    status = (await browser.get("/terminal/status", headers=USER)).json()
    assert status["terminal_id"] == TERMINAL_ID and status["assigned"] == ["E1", "E2"]
    assert status["cache"]["used_bytes"] > 0 and status["cache"]["max_bytes"] == 1 << 30
    assert {e["exam_id"]: e["complete"] for e in status["exams"]} == {"E1": True, "E2": False}
    e1 = (await browser.get("/terminal/exams/E1", headers=USER)).json()
    assert e1 == {"local": True, "complete": True, "fraction": 1.0, "source": "computed",
                  "reason": "40x tiles from this workstation's local copy",
                  "slides": {"1": {"complete": True, "done": 6, "expected": 6, "source": "computed"}}}
    e2 = (await browser.get("/terminal/exams/E2", headers=USER)).json()
    assert not e2["complete"] and e2["reason"] == "this exam is still downloading to this workstation (0%)"


async def test_other_requests_and_the_event_stream_pass_through(setup) -> None:  # type: ignore[no-untyped-def]
    browser, _, _, _ = setup
    echoed = await browser.post("/api/echo?x=1", content=b'{"a": 1}', headers={"Content-Type": "application/json"})
    assert echoed.json() == {"body": '{"a": 1}', "query": "x=1"}
    async with browser.stream("GET", "/api/slides/E1/1/events", headers=USER) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        body = b"".join([chunk async for chunk in events.aiter_raw()])
    assert body.count(b"event: tile") == 2
    assert (await browser.get("/api/nothing-here")).status_code == 404


async def test_the_server_being_down_is_a_clear_502(tmp_path: Path) -> None:
    server = FakeServer()
    cache = LocalCache(tmp_path, max_bytes=1 << 30, min_free_bytes=0, retention_days=14).open()
    syncer = Syncer(TerminalClient("http://server", TERMINAL_ID, TERMINAL_KEY, transport=server.transport()), cache,
                    heartbeat_s=15, poll_s=3, concurrency=2)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    app = create_app(syncer, server_url="http://server", terminal_id=TERMINAL_ID, transport=httpx.MockTransport(refuse))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://terminal") as browser:
        answer = await browser.get("/api/exams", headers=USER)
    assert answer.status_code == 502 and "cannot reach the diagnosis server" in answer.json()["detail"]
