"""The compute engine end to end on local storage (directory cache, in-process leases):
results, cache reuse, bad input, model errors on one tile, leases, preemption."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from compute.codec import decode_png
from compute.engine import ComputeEngine, EngineConfig
from compute.plan import SlideGeometry
from compute.samples import downsample, load_rgb, shared_images, write_lr_slide
from compute.slides import DirectorySlides
from compute.tile_cache import DirectoryTileCache
from compute.tile_leases import LocalLeases
from compute.upscaler import InterpolationUpscaler
from core.settings import get_settings
from schemas.events import Event, Region, TileRef, UpscaleCancelled, UpscaleDone, UpscaleFailed, UpscaleRequested
from schemas.layout import TILE_SIZE, lr_key

EXAM = "EX-ENGINE-1"


@pytest.fixture(scope="module")
def lr_pixels() -> np.ndarray:
    images = shared_images(get_settings().shared_data)
    if not images:
        pytest.skip("shared H&E data not available")
    return downsample(load_rgb(images[1]), 4)[:180, :250]  # 250 x 180 LR


class Harness:
    def __init__(self, root: Path, pixels: np.ndarray, upscaler: object | None = None, **config: object) -> None:
        write_lr_slide(pixels, root / "slides" / lr_key(EXAM, 1))
        self.pixels = pixels
        self.events: list[Event] = []
        self.cache = DirectoryTileCache(root / "hr")
        self.leases = LocalLeases()
        self.engine = ComputeEngine(
            upscaler=upscaler or InterpolationUpscaler(),  # type: ignore[arg-type]  # test doubles
            slides=DirectorySlides(root / "slides"),
            cache=self.cache,
            leases=self.leases,
            publish=self._publish,
            config=EngineConfig(**({"max_batch": 4, "lease_poll_s": 0.05} | config)),  # type: ignore[arg-type]  # overrides of known fields
            worker_id="worker-A",
        )
        self.on_publish: list = []

    async def _publish(self, event: Event) -> None:
        self.events.append(event)
        for hook in self.on_publish:
            await hook(event)

    async def run(self, *requests: UpscaleRequested) -> list[str]:
        finished: list[str] = []
        for r in requests:
            await self.engine.submit(r, on_finished=lambda r=r: finished.append(str(r.request_id)))
        task = asyncio.create_task(self.engine.run())
        try:
            await asyncio.wait_for(self.engine.wait_idle(), 60)
        finally:
            self.engine.stop()
            await task
        return finished

    def done(self, request: UpscaleRequested) -> list[UpscaleDone]:
        return [e for e in self.events if isinstance(e, UpscaleDone) and e.request_id == request.request_id]

    def failed(self, request: UpscaleRequested) -> list[UpscaleFailed]:
        return [e for e in self.events if isinstance(e, UpscaleFailed) and e.request_id == request.request_id]


def req(priority: str = "interactive", scale: int = 4, **fields: object) -> UpscaleRequested:
    base: dict[str, object] = {"exam_id": EXAM, "slide_number": 1, "scale": scale, "priority": priority}
    return UpscaleRequested(**(base | fields))


async def test_region_request_writes_every_tile_and_reports_it(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    request = req(region=Region(x=0, y=0, width=1000, height=720))  # whole x4 image: 4 x 3 tiles
    finished = await h.run(request)
    assert finished == [str(request.request_id)]
    results = [r for d in h.done(request) for r in d.results]
    assert sorted((r.tile.col, r.tile.row) for r in results) == [(c, r) for c in range(4) for r in range(3)]
    assert not any(r.cached for r in results)
    assert all({"queue", "read", "compute", "write"} <= set(d.timings_ms) for d in h.done(request))
    assert {d.model for d in h.done(request)} == {"bicubic"}
    # The stored tiles, stitched, are the upscaled slide.
    whole = InterpolationUpscaler().upscale_batch([lr_pixels], 4)[0]
    for r in results:
        tile = decode_png((await h.cache.get(r.object.key)) or b"")
        y0, x0 = r.tile.row * TILE_SIZE, r.tile.col * TILE_SIZE
        np.testing.assert_array_equal(tile, whole[y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]])
    assert h.engine.stats.tiles_computed == 12


async def test_tiles_in_the_cache_are_not_computed_again(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    top = SlideGeometry(250, 180).top_level(4)
    first = req(tiles=[TileRef(level=top, col=1, row=1)])
    second = req(tiles=[TileRef(level=top, col=1, row=1), TileRef(level=top, col=2, row=1)])
    await h.run(first)
    await h.run(second)
    results = {(r.tile.col, r.tile.row): r.cached for d in h.done(second) for r in d.results}
    assert results == {(1, 1): True, (2, 1): False}
    assert h.engine.stats.tiles_computed == 2


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"exam_id": "NO-SUCH-EXAM"}, "no LR image"),
        ({"tiles": [TileRef(level=3, col=0, row=0)]}, "not a super-resolution level"),
        ({"tiles": [TileRef(level=10, col=9, row=0)]}, "outside level 10"),
        ({"region": Region(x=5000, y=0, width=10, height=10)}, "outside the x4 image"),
        ({"deadline": datetime.now(UTC) - timedelta(seconds=1), "tiles": [TileRef(level=10, col=0, row=0)]},
         "deadline passed"),
    ],
)
async def test_bad_requests_fail_with_a_reason_and_others_continue(
        tmp_path: Path, lr_pixels: np.ndarray, request_fields: dict, reason: str) -> None:
    h = Harness(tmp_path, lr_pixels)
    base = {"tiles": [TileRef(level=10, col=0, row=0)]} if "region" not in request_fields else {}
    bad = req(**(base | request_fields))
    good = req(tiles=[TileRef(level=10, col=0, row=0)])
    finished = await h.run(bad, good)
    assert set(finished) == {str(bad.request_id), str(good.request_id)}
    [failure] = h.failed(bad)
    assert reason in failure.reason
    assert not h.done(bad)
    assert len(h.done(good)) == 1


class FailsOnBlackWindows(InterpolationUpscaler):
    """The model raising on one particular input (here: an all-black LR window)."""

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        if any(int(im.max()) == 0 for im in images):
            raise RuntimeError("NaN in generator output")
        return super().upscale_batch(images, scale)


async def test_a_model_error_fails_that_tile_only(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    pixels = lr_pixels.copy()
    pixels[60:140, 60:140] = 0  # covers tile (1, 1) of the x4 top level and its context
    h = Harness(tmp_path, pixels, upscaler=FailsOnBlackWindows())
    request = req(region=Region(x=0, y=0, width=1000, height=720))
    finished = await h.run(request)
    assert finished == [str(request.request_id)]  # the request still completes
    [failure] = h.failed(request)
    assert "model error" in failure.reason and "NaN" in failure.reason
    assert [(t.col, t.row) for t in failure.tiles or []] == [(1, 1)]
    done = sorted((r.tile.col, r.tile.row) for d in h.done(request) for r in d.results)
    assert len(done) == 11 and (1, 1) not in done
    assert h.leases.holder("hr/EX-ENGINE-1/0001/x4/10/1_1.png") is None  # not left in flight
    assert not await h.cache.exists("hr/EX-ENGINE-1/0001/x4/10/1_1.png")


async def test_a_tile_leased_elsewhere_is_awaited_not_recomputed(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    key = "hr/EX-ENGINE-1/0001/x4/10/0_0.png"
    assert await h.leases.acquire(key, "worker-B", ttl_s=60)
    request = req(tiles=[TileRef(level=10, col=0, row=0), TileRef(level=10, col=1, row=0)])

    async def worker_b_finishes(event: Event) -> None:
        # worker B writes its tile and drops the lease once A has done the other tile
        if isinstance(event, UpscaleDone) and not await h.cache.exists(key):
            await h.cache.put(key, b"tile from B", "image/png")
            await h.leases.release(key, "worker-B")

    h.on_publish.append(worker_b_finishes)
    await h.run(request)
    results = {(r.tile.col, r.tile.row): r.cached for d in h.done(request) for r in d.results}
    assert results == {(1, 0): False, (0, 0): True}
    assert await h.cache.get(key) == b"tile from B"
    assert h.engine.stats.tiles_deferred >= 1


async def test_an_expired_lease_of_a_dead_worker_is_taken_over(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    key = "hr/EX-ENGINE-1/0001/x4/10/0_0.png"
    assert await h.leases.acquire(key, "dead-worker", ttl_s=0.3)
    request = req(tiles=[TileRef(level=10, col=0, row=0)])
    await h.run(request)
    [done] = h.done(request)
    assert [r.cached for r in done.results] == [False]
    assert await h.cache.exists(key)
    assert h.leases.holder(key) is None


async def test_interactive_work_preempts_a_running_background_request(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels, max_batch=2)
    background = req(priority="background", scale=8, region=Region(x=0, y=0, width=2000, height=1440))  # 8x6 tiles
    interactive = req(priority="interactive", scale=4, tiles=[TileRef(level=10, col=2, row=2)])

    async def viewer_asks(event: Event) -> None:
        if isinstance(event, UpscaleDone) and event.request_id == background.request_id and len(h.done(background)) == 1:
            await h.engine.submit(interactive)

    h.on_publish.append(viewer_asks)
    await h.run(background)
    order = [e.request_id for e in h.events if isinstance(e, UpscaleDone)]
    # The interactive request is served by the very next batch, then background resumes.
    assert order[:2] == [background.request_id, interactive.request_id]
    assert set(order[2:]) == {background.request_id}
    bg_tiles = sorted((r.tile.col, r.tile.row) for d in h.done(background) for r in d.results)
    assert bg_tiles == sorted((c, r) for c in range(8) for r in range(6))  # nothing lost or doubled
    assert h.engine.stats.preemptions == 1


async def test_a_redelivered_request_is_not_queued_twice(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    request = req(region=Region(x=0, y=0, width=1000, height=720))
    acks: list[str] = []
    await h.engine.submit(request, on_finished=lambda: acks.append("first delivery"))
    await h.engine.submit(request, on_finished=lambda: acks.append("redelivery"))
    await h.run()
    assert sorted(acks) == ["first delivery", "redelivery"]
    assert h.engine.stats.tiles_computed == 12
    assert sum(len(d.results) for d in h.done(request)) == 12


async def test_remaining_counts_down_to_zero_on_the_last_answer(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    pixels = lr_pixels.copy()
    pixels[60:140, 60:140] = 0
    h = Harness(tmp_path, pixels, upscaler=FailsOnBlackWindows(), max_batch=3)
    request = req(region=Region(x=0, y=0, width=1000, height=720))  # 12 tiles, one fails
    await h.run(request)
    answers = [e for e in h.events if getattr(e, "request_id", None) == request.request_id]
    assert len(answers) >= 5
    sizes = [len(a.results) if isinstance(a, UpscaleDone) else len(a.tiles or []) for a in answers]
    remaining = [a.remaining for a in answers]
    assert remaining == [12 - s for s in np.cumsum(sizes)]
    assert remaining[-1] == 0 and all(r > 0 for r in remaining[:-1])


async def test_requests_of_revoked_partitions_are_handed_over_unacknowledged(
        tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    moved = req(priority="background", region=Region(x=0, y=0, width=1000, height=720))
    kept = req(priority="background", tiles=[TileRef(level=10, col=0, row=0)])
    acks: list[str] = []
    await h.engine.submit(moved, on_finished=lambda: acks.append("moved"), source=("upscale.requested", 4))
    await h.engine.submit(kept, on_finished=lambda: acks.append("kept"), source=("upscale.requested", 4))
    await h.engine.submit(kept, on_finished=lambda: acks.append("kept again"), source=("upscale.requested", 5))
    # `kept` was also delivered through partition 5, which stays ours
    assert h.engine.drop_sources({("upscale.requested", 4)}) == 1
    assert h.engine.drop_sources({("upscale.requested", 4)}) == 0
    await h.run()
    assert acks == ["kept", "kept again"]  # the handed-over request is not acknowledged: its new owner gets it
    assert not h.done(moved) and len(h.done(kept)) == 1
    assert h.engine.stats.tiles_computed == 1


def cancel_of(request: UpscaleRequested, tiles: list[TileRef]) -> UpscaleCancelled:
    return UpscaleCancelled(request_id=request.request_id, exam_id=request.exam_id,
                            slide_number=request.slide_number, priority=request.priority, tiles=tiles)


async def test_cancelled_tiles_still_queued_are_dropped_and_answered_as_cancelled(
        tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels, max_batch=2)
    top = SlideGeometry(250, 180).top_level(4)
    tiles = [TileRef(level=top, col=c, row=r) for r in range(3) for c in range(4)]
    request = req(tiles=tiles)
    finished: list[str] = []
    await h.engine.submit(request, on_finished=lambda: finished.append("acked"))
    away = tiles[6:]
    assert await h.engine.cancel(cancel_of(request, away)) == len(away)
    assert not finished  # six tiles are still wanted: not acknowledged yet
    [answer] = h.failed(request)
    assert answer.cancelled and answer.remaining == 6
    assert {(t.col, t.row) for t in answer.tiles or []} == {(t.col, t.row) for t in away}
    await h.run()
    computed = {(r.tile.col, r.tile.row) for d in h.done(request) for r in d.results}
    assert computed == {(t.col, t.row) for t in tiles[:6]}
    assert h.engine.stats.tiles_computed == 6 and h.engine.stats.tiles_cancelled == 6
    assert finished == ["acked"] and h.done(request)[-1].remaining == 0
    # Cancelling what is already answered changes nothing.
    assert await h.engine.cancel(cancel_of(request, tiles)) == 0


async def test_cancelling_every_tile_finishes_the_request(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    top = SlideGeometry(250, 180).top_level(4)
    tiles = [TileRef(level=top, col=c, row=0) for c in range(3)]
    request = req(tiles=tiles)
    finished: list[str] = []
    await h.engine.submit(request, on_finished=lambda: finished.append("acked"))
    assert await h.engine.cancel(cancel_of(request, tiles)) == 3
    assert finished == ["acked"] and not h.engine.in_progress(request.request_id)
    assert h.failed(request)[0].remaining == 0 and h.engine.stats.requests_failed == 0
    await h.run()
    assert not h.done(request) and h.engine.stats.tiles_computed == 0


async def test_a_cancel_read_before_its_request_drops_those_tiles_on_arrival(
        tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    top = SlideGeometry(250, 180).top_level(4)
    tiles = [TileRef(level=top, col=c, row=1) for c in range(4)]
    request = req(tiles=tiles)
    assert await h.engine.cancel(cancel_of(request, tiles[:3])) == 0  # not seen yet: remembered
    finished = await h.run(request)
    assert finished == [str(request.request_id)]
    [answer] = h.failed(request)
    assert answer.cancelled and len(answer.tiles or []) == 3 and answer.remaining == 1
    assert [(r.tile.col, r.tile.row) for d in h.done(request) for r in d.results] == [(3, 1)]


class LanczosAtX2(InterpolationUpscaler):
    def method_for(self, scale: int) -> str:
        return "lanczos" if scale == 2 else self.name


async def test_upscale_done_names_what_answered_each_scale(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels, upscaler=LanczosAtX2())
    geometry = SlideGeometry(250, 180)
    x2 = req(scale=2, tiles=[TileRef(level=geometry.top_level(2), col=0, row=0)])
    x4 = req(scale=4, tiles=[TileRef(level=geometry.top_level(4), col=0, row=0)])
    await h.run(x2, x4)
    assert [d.model for d in h.done(x2)] == ["lanczos"] and [d.model for d in h.done(x4)] == ["bicubic"]
