"""The terminal API on the real viewer: only a registered, active terminal's own key opens it
(never a user's token), a terminal reads only the exams assigned to it now, and what it
gets is exactly what the hr-cache holds (body digest in a header), audited by IDs only."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from catalog.assignments import Assignments
from catalog.terminals import Terminals
from core.secrets import key_digest, new_key
from core.settings import Settings
from schemas.catalog import AssignmentRecord, TerminalRecord
from schemas.common import ObjectRef, StorageTier
from schemas.layout import hr_tile_key, sr_levels
from tests.integration.tierkit import uid
from tests.integration.viewer_kit import Seeded, seed, sign_in, viewer_on
from viewer.context import ViewerContext

pytestmark = pytest.mark.integration
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


@dataclass
class Fleet:
    seeded: Seeded
    mine: str
    key: str
    other: str
    other_key: str
    other_exam: str
    tile: tuple[int, int, int]
    scale: int


async def register(ctx: ViewerContext, tid: str, *, active: bool = True) -> str:
    key = new_key()
    terminals = Terminals(ctx.catalog.db)
    await terminals.register(TerminalRecord(terminal_id=tid, task_classes=[f"sec-{tid.lower()}"], capacity_per_day=50,
                                            owner_kind="department", owner="GI pathology", key_digest=key_digest(key)))
    if not active:
        await terminals.set_active(tid, False)
    return key


async def give(ctx: ViewerContext, exam_id: str, tid: str, slides: list[int]) -> None:
    now = datetime.now(UTC)
    await Assignments(ctx.catalog.db).create(AssignmentRecord(
        exam_id=exam_id, state="assigned", terminal_id=tid, task_class=f"sec-{tid.lower()}", rule="test",
        slide_numbers=slides, assigned_day=now.date().isoformat(), assigned_at=now))


@pytest.fixture(scope="module")
async def viewer(stack: Settings) -> AsyncIterator[tuple[ViewerContext, httpx.AsyncClient, Fleet]]:
    seeded = await seed(stack, size=200)
    async with viewer_on(stack, compute=False) as (ctx, url), httpx.AsyncClient(base_url=url, timeout=30) as client:
        mine, other = uid("TS"), uid("TS")
        key, other_key = await register(ctx, mine), await register(ctx, other)
        other_exam = (await seed(stack, size=200)).exam_id
        await give(ctx, seeded.exam_id, mine, [1])
        await give(ctx, other_exam, other, [1])
        scale = 8  # 5x stored, 40x wanted
        tile = (sr_levels(200, 200, scale)[-1], 1, 0)
        await ctx.store.put_bytes(ObjectRef(bucket=ctx.store.bucket(StorageTier.TEMPORARY),
                                            key=hr_tile_key(seeded.exam_id, 1, scale, *tile)), PNG,
                                  content_type="image/png")
        yield ctx, client, Fleet(seeded, mine, key, other, other_key, other_exam, tile, scale)
        for tid in (mine, other):
            await Terminals(ctx.catalog.db).set_active(tid, False)


def as_terminal(tid: str, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-Terminal-Id": tid}


def urls(fleet: Fleet, exam_id: str | None = None) -> list[tuple[str, str]]:
    exam = exam_id or fleet.seeded.exam_id
    level, col, row = fleet.tile
    return [("POST", "/api/terminal/heartbeat"), ("GET", "/api/terminal/assignments"),
            ("GET", f"/api/terminal/exams/{exam}/manifest"),
            ("GET", f"/api/terminal/tiles/{exam}/1/{level}/{col}_{row}.png")]


async def test_every_terminal_route_refuses_anything_but_the_terminals_own_key(viewer) -> None:
    ctx, client, fleet = viewer
    admin = fleet.seeded.user("admin")
    user_token = (await sign_in(client, admin, fleet.seeded.passwords[admin]))["Authorization"]
    retired = uid("TS")
    retired_key = await register(ctx, retired, active=False)
    refusals = [
        {},
        {"Authorization": f"Bearer {fleet.key}"},  # no terminal id
        {"X-Terminal-Id": fleet.mine},  # no key
        as_terminal(fleet.mine, new_key()),  # wrong key
        as_terminal(fleet.mine, key_digest(fleet.key)),  # the stored digest is not the key
        as_terminal(fleet.mine, fleet.other_key),  # another terminal's key
        as_terminal(uid("TS"), fleet.key),  # unknown terminal
        as_terminal("../" + fleet.mine, fleet.key),  # not an ID at all
        as_terminal(retired, retired_key),  # retired
        {"Authorization": user_token, "X-Terminal-Id": fleet.mine},  # an administrator's token
        {"Authorization": user_token},
        {"Authorization": f"Basic {fleet.key}", "X-Terminal-Id": fleet.mine},
    ]
    for headers in refusals:
        for method, url in urls(fleet):
            reply = await client.request(method, url, headers=headers)
            assert reply.status_code == 401, (headers.keys(), method, url, reply.status_code)
            assert reply.headers.get("www-authenticate") == "Bearer"
            assert fleet.seeded.patient_id not in reply.text
    assert not (await Terminals(ctx.catalog.db).get(retired)).online  # type: ignore[union-attr]


async def test_a_terminal_reads_only_the_exams_assigned_to_it(viewer) -> None:
    _, client, fleet = viewer
    headers = as_terminal(fleet.mine, fleet.key)
    for method, url in urls(fleet, fleet.other_exam)[2:]:
        reply = await client.request(method, url, headers=headers)
        assert reply.status_code == 403, (url, reply.status_code)
    for exam in (uid("EX"), "not an id", "a" * 300):  # unknown or malformed: the same refusal
        reply = await client.get(f"/api/terminal/exams/{exam}/manifest", headers=headers)
        assert reply.status_code == 403
    listed = (await client.get("/api/terminal/assignments", headers=headers)).json()
    assert listed["terminal_id"] == fleet.mine
    assert [a["exam_id"] for a in listed["assignments"]] == [fleet.seeded.exam_id]
    other = (await client.get("/api/terminal/assignments", headers=as_terminal(fleet.other, fleet.other_key))).json()
    assert [a["exam_id"] for a in other["assignments"]] == [fleet.other_exam]


async def test_heartbeat_manifest_and_tile_bytes(viewer) -> None:
    ctx, client, fleet = viewer
    headers = as_terminal(fleet.mine, fleet.key)
    beat = await client.post("/api/terminal/heartbeat", headers=headers)
    assert beat.status_code == 200
    body = beat.json()
    assert set(body) == {"terminal_id", "online", "server_time"} and body["online"] is True
    assert datetime.fromisoformat(body["server_time"]).tzinfo is not None
    record = await Terminals(ctx.catalog.db).get(fleet.mine)
    assert record is not None and record.online and record.last_heartbeat is not None

    listed = (await client.get("/api/terminal/assignments", headers=headers)).json()["assignments"]
    assert set(listed[0]) == {"exam_id", "slide_numbers", "assigned_at", "revision"}
    assert listed[0]["slide_numbers"] == [1] and listed[0]["revision"] == 0

    manifest = (await client.get(f"/api/terminal/exams/{fleet.seeded.exam_id}/manifest", headers=headers)).json()
    assert manifest["exam_id"] == fleet.seeded.exam_id and len(manifest["slides"]) == 1
    slide = manifest["slides"][0]
    assert set(slide) == {"slide_number", "scale", "scanned", "levels", "expected", "present", "complete"}
    assert (slide["slide_number"], slide["scale"], slide["scanned"], slide["complete"]) == (1, fleet.scale, False, False)
    assert slide["expected"] == sum(lv["cols"] * lv["rows"] for lv in slide["levels"]) == 69
    assert [lv["level"] for lv in slide["levels"]] == list(sr_levels(200, 200, fleet.scale))
    assert slide["present"] == [list(fleet.tile)]

    level, col, row = fleet.tile
    tile = await client.get(f"/api/terminal/tiles/{fleet.seeded.exam_id}/1/{level}/{col}_{row}.png", headers=headers)
    assert tile.status_code == 200 and tile.content == PNG
    assert tile.headers["x-content-sha256"] == hashlib.sha256(PNG).hexdigest()
    assert tile.headers["x-tile-source"] == "computed" and tile.headers["content-type"] == "image/png"
    for missing in (f"{level}/0_0.png", f"{level}/9999_0.png", f"{level}/{col}_{row}.jpeg"):
        reply = await client.get(f"/api/terminal/tiles/{fleet.seeded.exam_id}/1/{missing}", headers=headers)
        assert reply.status_code == 404, missing
    reply = await client.get(f"/api/terminal/tiles/{fleet.seeded.exam_id}/2/{level}/{col}_{row}.png", headers=headers)
    assert reply.status_code == 404  # not a slide of the assignment

    history = await ctx.catalog.exam_history(fleet.seeded.exam_id)
    reads = [e for e in history if e.actor == f"terminal:{fleet.mine}"]
    assert {e.action for e in reads} >= {"terminal_manifest", "terminal_tiles"}
    assert fleet.seeded.patient_id not in json.dumps([e.to_document() for e in reads], default=str)
    for reply in (beat, tile):
        assert fleet.seeded.patient_id not in reply.text


async def test_a_reassigned_exam_disappears_and_is_refused(viewer) -> None:
    ctx, client, fleet = viewer
    exam = (await seed(ctx.settings, size=200)).exam_id
    await give(ctx, exam, fleet.mine, [1])
    headers = as_terminal(fleet.mine, fleet.key)
    assert (await client.get(f"/api/terminal/exams/{exam}/manifest", headers=headers)).status_code == 200

    def away(current: AssignmentRecord) -> AssignmentRecord:
        return current.model_copy(update={"terminal_id": fleet.other})

    await Assignments(ctx.catalog.db).update(exam, away)
    listed = (await client.get("/api/terminal/assignments", headers=headers)).json()["assignments"]
    assert exam not in [a["exam_id"] for a in listed]
    assert (await client.get(f"/api/terminal/exams/{exam}/manifest", headers=headers)).status_code == 403
