"""The viewer's API on the real stack (Kafka, MinIO, FerretDB, a compute worker): sign-in and
the 401/403 paths, search and worklist, Deep Zoom geometry, a placeholder replaced by the
computed tile with its SSE news, reports with conflict detection, and the audit trail."""

from __future__ import annotations

import asyncio
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from PIL import Image

from core.settings import Settings
from core.tokens import Principal, TokenSigner
from schemas.layout import dzi_max_level, level_size
from tests.integration.upscale_harness import ControlledUpscaler, group_settings, inprocess_worker, unique
from tests.integration.viewer_kit import Seeded, seed, sign_in, viewer_on
from viewer.login_guard import LoginGuard

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def seeded(stack: Settings) -> Seeded:
    return await seed(stack)


@pytest.fixture(scope="module")
async def viewer(stack: Settings) -> AsyncIterator[tuple]:
    async with viewer_on(stack) as (context, url), httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield context, client


async def headers_for(viewer, seeded: Seeded, role: str) -> dict[str, str]:
    name = seeded.user(role)
    return await sign_in(viewer[1], name, seeded.passwords[name])


def slide_url(seeded: Seeded) -> str:
    return f"/api/slides/{seeded.exam_id}/{seeded.slide_number}"


# --- authentication ----------------------------------------------------------------------


async def test_health_is_open_and_every_api_route_needs_a_token(viewer, seeded: Seeded) -> None:
    _, client = viewer
    assert (await client.get("/health")).status_code == 200
    schema = (await client.get("/api/openapi.json")).json()
    params = {"exam_id": seeded.exam_id, "slide_number": "1", "level": "0", "tile": "0_0.jpeg", "region": "full",
              "size": "max", "rotation": "0", "quality_format": "default.jpg"}
    checked = 0
    for path, methods in schema["paths"].items():
        if path in ("/health", "/api/auth/login"):
            continue
        url = path.format(**params)
        for method in methods:
            reply = await client.request(method.upper(), url, params={"exam_id": seeded.exam_id})
            assert reply.status_code == 401, f"{method} {path} answered {reply.status_code} without a token"
            assert reply.headers.get("www-authenticate") == "Bearer"
            checked += 1
    assert checked >= 12


async def test_forged_expired_and_disabled_tokens_are_refused(viewer, seeded: Seeded) -> None:
    context, client = viewer
    name = seeded.user("path")
    forged, _ = TokenSigner(b"f" * 32, timedelta(minutes=5)).issue(Principal(name, "administrator"))
    expired, _ = context.signer.issue(Principal(name, "pathologist"), now=datetime.now(UTC) - timedelta(hours=1))
    for token in (forged, "garbage", expired):
        reply = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 401
    ghost, _ = context.signer.issue(Principal("nobody-here", "administrator"))
    assert (await client.get("/api/me", headers={"Authorization": f"Bearer {ghost}"})).status_code == 401


async def test_sign_in_gives_a_token_and_wrong_passwords_are_limited(viewer, seeded: Seeded) -> None:
    context, client = viewer
    name = seeded.user("path")
    headers = await sign_in(client, name, seeded.passwords[name])
    me = (await client.get("/api/me", headers=headers)).json()
    assert me == {"username": name, "role": "pathologist", "department": seeded.department}
    renewed = await client.post("/api/auth/refresh", headers=headers)
    assert renewed.status_code == 200 and renewed.json()["token"]
    saved_guard = context.guard
    context.guard = LoginGuard(3, 300.0)  # this test's own count (all tests sign in from 127.0.0.1)
    try:
        for _ in range(3):
            reply = await client.post("/api/auth/login", json={"username": name, "password": "wrong password!"})
            assert reply.status_code == 401 and "token" not in reply.text
        limited = await client.post("/api/auth/login", json={"username": name, "password": seeded.passwords[name]})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    finally:
        context.guard = saved_guard
    bad = await client.post("/api/auth/login", json={"username": name})
    assert bad.status_code == 422 and "password" in bad.json()["detail"]


# --- search and access --------------------------------------------------------------------


async def test_worklist_and_search_follow_assignments(viewer, seeded: Seeded) -> None:
    _, client = viewer
    mine = await headers_for(viewer, seeded, "path")
    other = await headers_for(viewer, seeded, "other")
    admin = await headers_for(viewer, seeded, "admin")
    worklist = (await client.get("/api/exams", params={"worklist": "true"}, headers=mine)).json()
    exam = next(e for e in worklist["exams"] if e["exam_id"] == seeded.exam_id)
    assert exam["slides"] == [{"slide_number": 1, "width": 600, "height": 600, "magnification": 5.0}]
    assert "identity" not in json.dumps(exam) and exam["report_status"] in ("none", "draft", "final")
    by_patient = (await client.get("/api/exams", params={"patient_id": seeded.patient_id}, headers=mine)).json()
    assert [e["exam_id"] for e in by_patient["exams"]] == [seeded.exam_id]
    hidden = (await client.get("/api/exams", params={"exam_id": seeded.exam_id}, headers=other)).json()
    assert hidden == {"exams": [], "total": 0}
    assert (await client.get(f"/api/exams/{seeded.exam_id}", headers=other)).status_code == 403
    assert (await client.get(slide_url(seeded), headers=other)).status_code == 403
    seen = (await client.get("/api/exams", params={"exam_id": seeded.exam_id}, headers=admin)).json()
    assert seen["total"] == 1
    assert (await client.get("/api/exams/NO-SUCH-EXAM", headers=admin)).status_code == 404
    bad_date = await client.get("/api/exams", params={"date_from": "yesterday"}, headers=admin)
    assert bad_date.status_code == 422


# --- Deep Zoom ---------------------------------------------------------------------------


async def test_dzi_geometry_and_lr_tiles_follow_the_layout(viewer, seeded: Seeded) -> None:
    _, client = viewer
    headers = await headers_for(viewer, seeded, "path")
    info = (await client.get(slide_url(seeded), headers=headers)).json()
    assert (info["scale"], info["width"], info["height"]) == (8, 4800, 4800)
    assert info["max_level"] == dzi_max_level(4800, 4800)
    assert info["lr_level"] == info["max_level"] - 3
    assert info["levels"][-1] == {"level": info["max_level"], "magnification": 40.0, "kind": "sr"}
    dzi = await client.get(info["dzi_url"], headers=headers)
    root = ET.fromstring(dzi.text)
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert size is not None and size.get("Width") == "4800" and root.get("TileSize") == "256"

    files = f"{slide_url(seeded)}/slide_files"
    tile = await client.get(f"{files}/{info['lr_level']}/2_2.jpeg", headers=headers)
    assert tile.status_code == 200 and tile.headers["x-tile-source"] == "lr"
    assert Image.open(io.BytesIO(tile.content)).size == (600 - 512, 600 - 512)  # the edge tile
    low = info["lr_level"] - 2
    small = await client.get(f"{files}/{low}/0_0.jpeg", headers=headers)
    assert Image.open(io.BytesIO(small.content)).size == level_size(4800, 4800, low)
    for bad in (f"{files}/{info['lr_level']}/3_0.jpeg", f"{files}/{info['max_level'] + 1}/0_0.jpeg",
                f"{files}/0/0_0.gif", f"{files}/0/../../etc.jpeg", f"{files}/0/x_y.jpeg",
                f"/api/slides/{seeded.exam_id}/7/slide.dzi", f"/api/slides/{seeded.exam_id}/0/slide.dzi"):
        reply = await client.get(bad, headers=headers)
        assert 400 <= reply.status_code < 500, f"{bad}: {reply.status_code}"
        assert "Traceback" not in reply.text


async def test_a_missing_40x_tile_is_a_placeholder_until_computed_then_announced(
        viewer, seeded: Seeded, stack: Settings, tmp_path) -> None:
    context, client = viewer
    headers = await headers_for(viewer, seeded, "path")
    info = (await client.get(slide_url(seeded), headers=headers)).json()
    top = info["max_level"]
    url = f"{slide_url(seeded)}/slide_files/{top}/3_4.jpeg"
    upscaler = ControlledUpscaler()
    upscaler.pause()
    settings = group_settings(stack, unique("it-viewer"))
    async with inprocess_worker(settings, upscaler, tmp_path), \
            client.stream("GET", info["events_url"], headers=headers) as events:
        lines = events.aiter_lines()
        assert await asyncio.wait_for(lines.__anext__(), 10) == ": connected"
        first = await client.get(url, headers=headers)
        assert first.headers["x-tile-source"] == "placeholder"
        assert first.headers["cache-control"] == "no-store"
        assert Image.open(io.BytesIO(first.content)).size == (256, 256)
        again = await client.get(url, headers=headers)  # asked once only while in flight
        assert again.headers["x-tile-source"] == "placeholder"
        assert context.on_demand is not None and context.on_demand.pending(seeded.exam_id, 1) == 1
        upscaler.release()

        async def next_news() -> dict:
            while True:
                line = await lines.__anext__()
                if line.startswith("data: "):
                    return json.loads(line[6:])

        news = await asyncio.wait_for(next_news(), 60)
        [announced] = [t for t in news["tiles"] if (t["level"], t["col"], t["row"]) == (top, 3, 4)]
        assert news["source"] == "computed"
    real = await client.get(url, headers=headers)
    assert real.headers["x-tile-source"] == "computed" and real.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(real.content)).size == (256, 256)
    # Its consistency with the stored LR: in the news, on the tile and in the slide's map.
    value = float(real.headers["x-tile-consistency-db"])
    assert 0 < value <= 99 and announced["consistency_db"] == value
    assert info["consistency_threshold_db"] == stack.compute.consistency_threshold_db
    consistency = (await client.get(info["consistency_url"], headers=headers)).json()
    assert consistency["tiles"][f"{top}/3_4"] == value and consistency["scanned"] is False
    assert consistency["threshold_db"] == stack.compute.consistency_threshold_db
    assert consistency["below"] == sum(v < consistency["threshold_db"] for v in consistency["tiles"].values())
    other = (await client.get(info["consistency_url"], params={"scale": 4}, headers=headers)).json()
    assert other["scale"] == 4 and other["tiles"] == {}  # nothing computed at x4
    assert (await client.get(info["consistency_url"], params={"scale": 3}, headers=headers)).status_code == 422
    lr = await client.get(url, params={"view": "lr"}, headers=headers)
    assert lr.headers["x-tile-source"] == "lr"


# --- reports and audit ---------------------------------------------------------------------


async def test_reports_save_with_conflict_detection_and_refuse_bad_input(viewer, seeded: Seeded) -> None:
    _, client = viewer
    mine = await headers_for(viewer, seeded, "path")
    url = f"/api/exams/{seeded.exam_id}/report"
    draft = {"findings": "glands", "diagnosis": "adenoma", "body_part": "colon", "status": "draft",
             "expected_revision": None}
    created = await client.put(url, json=draft, headers=mine)
    assert created.status_code == 200 and created.json()["revision"] == 0
    updated = await client.put(url, json={**draft, "diagnosis": "tubular adenoma", "expected_revision": 0},
                               headers=mine)
    assert updated.json()["revision"] == 1
    stale = await client.put(url, json={**draft, "diagnosis": "lost update", "expected_revision": 0}, headers=mine)
    assert stale.status_code == 409 and "meanwhile" in stale.json()["detail"]

    refused = [
        (await client.put(url, json=draft, headers=await headers_for(viewer, seeded, "other")), 403),
        (await client.put(url, json=draft, headers=await headers_for(viewer, seeded, "tech")), 403),
        (await client.put(url, json={**draft, "findings": "x" * 300_000, "expected_revision": 1}, headers=mine), 413),
        (await client.put(url, content=b"{not json", headers={**mine, "content-type": "application/json"}), 422),
        (await client.put(url, json={**draft, "expected_revision": 1, "surprise": 1}, headers=mine), 422),
        (await client.put(url, json={**draft, "expected_revision": 1, "status": "signed"}, headers=mine), 422),
        (await client.put("/api/exams/NO-SUCH/report", json=draft, headers=mine), 404),
    ]
    for reply, status in refused:
        assert reply.status_code == status, reply.text
        assert "Traceback" not in reply.text
    stored = (await client.get(url, headers=mine)).json()
    assert (stored["revision"], stored["diagnosis"]) == (1, "tubular adenoma")  # nothing refused was written


async def test_reading_is_audited_by_user_without_identity_data(viewer, seeded: Seeded) -> None:
    _, client = viewer
    mine = await headers_for(viewer, seeded, "path")
    await client.get(slide_url(seeded), headers=mine)
    admin = await headers_for(viewer, seeded, "admin")
    assert (await client.get("/api/audit", params={"exam_id": seeded.exam_id}, headers=mine)).status_code == 403
    entries = (await client.get("/api/audit", params={"exam_id": seeded.exam_id}, headers=admin)).json()
    actions = {(e["actor"], e["action"]) for e in entries}
    assert (seeded.user("path"), "slide_open") in actions
    assert ("cli", "exam_assign") in actions
    assert seeded.patient_id not in json.dumps(entries)


async def test_demo_accounts_get_new_passwords_every_run(viewer, stack: Settings) -> None:
    from slidestream.demo.viewer import DEMO_PATHOLOGIST, prepare_viewer

    _, client = viewer
    seeded = await seed(stack)  # its own exam: the demo reassigns it
    first = await prepare_viewer(stack, seeded.exam_id)
    second = await prepare_viewer(stack, seeded.exam_id)
    assert first[DEMO_PATHOLOGIST] != second[DEMO_PATHOLOGIST]
    old = await client.post("/api/auth/login", json={"username": DEMO_PATHOLOGIST, "password": first[DEMO_PATHOLOGIST]})
    assert old.status_code == 401
    headers = await sign_in(client, DEMO_PATHOLOGIST, second[DEMO_PATHOLOGIST])
    await asyncio.sleep(0)  # the exam cache may hold the old assignment for a few seconds: ask the catalog
    exam = await viewer[0].catalog.get_exam(seeded.exam_id)
    assert exam is not None and exam.pathologist == DEMO_PATHOLOGIST
    assert (await client.get("/api/me", headers=headers)).json()["role"] == "pathologist"


async def test_iiif_info_and_regions(viewer, seeded: Seeded) -> None:
    _, client = viewer
    headers = await headers_for(viewer, seeded, "path")
    base = f"/api/iiif/{seeded.exam_id}/{seeded.slide_number}"
    info = await client.get(f"{base}/info.json", headers=headers)
    assert info.status_code == 200 and info.headers["content-type"].startswith("application/ld+json")
    data = info.json()
    assert (data["width"], data["height"]) == (4800, 4800) and data["id"].endswith(base)
    thumb = await client.get(f"{base}/full/300,/0/default.jpg", headers=headers)
    assert thumb.status_code == 200 and thumb.headers["x-tile-source"] == "lr"
    assert Image.open(io.BytesIO(thumb.content)).size == (300, 300)
    turned = await client.get(f"{base}/0,0,4800,2400/600,/90/default.jpg", headers=headers)
    assert Image.open(io.BytesIO(turned.content)).size == (300, 600)  # clockwise: portrait
    detail = await client.get(f"{base}/1024,1024,256,256/max/0/default.png", headers=headers)
    assert Image.open(io.BytesIO(detail.content)).size == (256, 256)
    assert detail.headers["x-tile-source"] in ("placeholder", "computed")
    for bad, status in ((f"{base}/5000,0,10,10/max/0/default.jpg", 400), (f"{base}/full/max/45/default.jpg", 400),
                        (f"{base}/full/max/0/bitonal.jpg", 400), (f"{base}/full/9000,/0/default.jpg", 400)):
        reply = await client.get(bad, headers=headers)
        assert reply.status_code == status, bad
    other = await headers_for(viewer, seeded, "other")
    assert (await client.get(f"{base}/info.json", headers=other)).status_code == 403


async def test_a_viewport_prefetches_its_ring_once_at_a_lower_priority(viewer, seeded: Seeded) -> None:
    context, client = viewer
    headers = await headers_for(viewer, seeded, "path")
    info = (await client.get(slide_url(seeded), headers=headers)).json()
    url = f"{slide_url(seeded)}/viewport"
    body = {"level": info["max_level"], "x": 2048, "y": 2048, "width": 1024, "height": 512}
    first = (await client.post(url, json=body, headers=headers)).json()
    assert first["visible"] == 8 and first["ring"] > 0 and 0 < first["prefetching"] <= first["ring"]
    assert first["mode"].startswith("low-resolution")
    again = (await client.post(url, json=body, headers=headers)).json()
    assert again["prefetching"] == 0  # already asked for
    # Zoomed out to the stored LR: the SR tiles asked for above that are still in flight
    # (nobody else views them) are cancelled at once.
    lr = (await client.post(url, json={**body, "level": info["lr_level"]}, headers=headers)).json()
    assert lr["ring"] == 0 and lr["visible"] == 0 and lr["cancelled"] > 0
    back = (await client.post(url, json=body, headers=headers)).json()
    assert back["prefetching"] > 0  # the cancelled ring is asked for again on return
    for bad in ({**body, "width": 0}, {**body, "level": 99}, {**body, "extra": 1}):
        assert (await client.post(url, json=bad, headers=headers)).status_code in (404, 422)


async def test_a_scanned_slide_is_labelled_scanned_and_never_computed(viewer, stack: Settings) -> None:
    from schemas.common import StorageTier
    from schemas.layout import hr_provenance_key, hr_tile_key

    context, client = viewer
    own = await seed(stack)
    headers = await headers_for(viewer, own, "path")
    top = dzi_max_level(600 * 8, 600 * 8)
    store = context.store
    await store.put_bytes(store.ref(StorageTier.TEMPORARY, hr_provenance_key(own.exam_id, 1, 8)),
                          b'{"source": "scanned", "status": "cutting"}', content_type="application/json")
    png = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 100, 150)).save(png, format="PNG")
    await store.put_bytes(store.ref(StorageTier.TEMPORARY, hr_tile_key(own.exam_id, 1, 8, top, 0, 0)), png.getvalue(),
                          content_type="image/png")
    cut = await client.get(f"{slide_url(own)}/slide_files/{top}/0_0.jpeg", headers=headers)
    assert cut.headers["x-tile-source"] == "scanned"
    assert "x-tile-consistency-db" not in cut.headers  # measured, not reconstructed
    consistency = (await client.get(f"{slide_url(own)}/consistency", headers=headers)).json()
    assert consistency["scanned"] is True and consistency["tiles"] == {}
    missing = await client.get(f"{slide_url(own)}/slide_files/{top}/1_0.jpeg", headers=headers)
    assert missing.headers["x-tile-source"] == "placeholder"
    assert context.on_demand is not None and context.on_demand.pending(own.exam_id, 1) == 0  # the scan fills it
