"""The engine and the scheduler with blocks (neighbouring tiles share LR windows): every tile
still answered once with ``remaining`` counting down, cache and leases per tile, failures
isolated to the tile, preemption between batches, the same pixels as without blocks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from compute.blocks import BlockLimits
from compute.codec import decode_png
from compute.engine import ComputeEngine, EngineConfig
from compute.plan import SlideGeometry, TileJob, plan_tile
from compute.samples import downsample, load_rgb, shared_images, write_lr_slide
from compute.scheduler import Batch, PriorityScheduler
from compute.slides import DirectorySlides, LrSlide
from compute.tile_cache import DirectoryTileCache
from compute.tile_leases import LocalLeases
from compute.upscaler import InterpolationUpscaler
from core.settings import get_settings
from schemas.events import Event, Region, TileRef, UpscaleDone, UpscaleFailed, UpscaleRequested
from schemas.layout import TILE_SIZE, lr_key
from schemas.topics import Priority
from slide_io import SlideError

EXAM = "EX-BLOCKS-1"
MARK = (100, 100)  # an LR pixel (x, y) inside the core of x4 tile (1, 1), outside its neighbours' windows


# --- the scheduler ------------------------------------------------------------------------

GEO = SlideGeometry(512, 512)  # x8: 16 x 16 top tiles


def grid_jobs(cells: Sequence[tuple[int, int]], slide: int = 1, level: int = 12) -> list[TileJob]:
    return [plan_tile(GEO, "E1", slide, 8, TileRef(level=level, col=c, row=r), 20) for c, r in cells]


def block_scheduler(max_batch: int) -> PriorityScheduler:
    return PriorityScheduler(max_batch, BlockLimits(max_batch, 1 << 60, lambda h, w, s: h * w))


def cells_of(batch: Batch | None) -> list[tuple[int, int]]:
    assert batch is not None
    return sorted((t.job.tile.col, t.job.tile.row) for t in batch.tiles)


def test_a_batch_is_the_oldest_tiles_block_not_the_next_tiles_in_the_list() -> None:
    s = block_scheduler(max_batch=4)
    region = [(c, r) for r in range(4) for c in range(4)]  # row-major, as a region request lists them
    s.add("viewport", Priority.INTERACTIVE, grid_jobs(region))
    first = s.next_batch(0.0)
    assert first is not None and cells_of(first) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # a 2 x 2 block
    seen = cells_of(first)
    while (batch := s.next_batch(0.0)) is not None:
        assert len(batch.tiles) <= 4
        seen += cells_of(batch)
    assert sorted(seen) == sorted(region)  # every tile once


def test_tiles_without_neighbours_fill_the_batch_with_equal_model_inputs() -> None:
    s = block_scheduler(max_batch=4)
    s.add("pair", Priority.BACKGROUND, grid_jobs([(0, 0), (1, 0)]))
    s.add("other slide", Priority.BACKGROUND, grid_jobs([(5, 5)], slide=2))
    s.add("block elsewhere", Priority.BACKGROUND, grid_jobs([(7, 7), (8, 7)], slide=3))  # keeps its block
    s.add("x4 tile", Priority.BACKGROUND, grid_jobs([(0, 0)], slide=4, level=11))  # another model input
    batch = s.next_batch(0.0)
    assert batch is not None and [t.request for t in batch.tiles] == ["pair", "pair", "other slide"]
    assert [t.request for t in s.next_batch(0.0).tiles] == ["block elsewhere"] * 2  # type: ignore[union-attr]


def test_neighbours_from_other_requests_and_repeated_tiles_share_the_batch() -> None:
    s = block_scheduler(max_batch=8)
    s.add("tile a", Priority.INTERACTIVE, grid_jobs([(3, 3)]))
    s.add("far", Priority.INTERACTIVE, grid_jobs([(9, 9)], slide=2))
    s.add("tile b", Priority.INTERACTIVE, grid_jobs([(4, 3)]))  # a viewer asking tile by tile
    s.add("tile a again", Priority.INTERACTIVE, grid_jobs([(3, 3)]))
    batch = s.next_batch(0.0)
    assert batch is not None
    assert sorted(str(t.request) for t in batch.tiles) == ["far", "tile a", "tile a again", "tile b"]


def test_a_higher_class_preempts_a_block_job_between_batches() -> None:
    s = block_scheduler(max_batch=4)
    background = [(c, r) for r in range(4) for c in range(6)]
    s.add("bg", Priority.BACKGROUND, grid_jobs(background))
    done = cells_of(s.next_batch(0.0))
    s.add("int", Priority.INTERACTIVE, grid_jobs([(10, 10)], slide=2))
    assert s.next_batch(0.0).priority is Priority.INTERACTIVE  # type: ignore[union-attr]
    while (batch := s.next_batch(0.0)) is not None:
        assert batch.priority is Priority.BACKGROUND
        done += cells_of(batch)
    assert sorted(done) == sorted(background)


def test_tiles_that_wait_for_another_worker_stay_out_of_the_block() -> None:
    s = block_scheduler(max_batch=4)
    s.add("r", Priority.DISTRIBUTION, grid_jobs([(0, 0), (1, 0), (0, 1), (1, 1)]))
    first = s.next_batch(0.0)
    assert first is not None
    s.defer([t for t in first.tiles if t.job.tile.col == 1], until=5.0)
    assert s.next_batch(0.0) is None
    later = s.next_batch(5.0)
    assert later is not None and cells_of(later) == [(1, 0), (1, 1)]


# --- the engine -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lr_pixels() -> np.ndarray:
    images = shared_images(get_settings().shared_data)
    if not images:
        pytest.skip("shared H&E data not available")
    return downsample(load_rgb(images[1]), 4)[:180, :250]  # 250 x 180 LR: x4 4 x 3 tiles, partial edges


class CountingBicubic(InterpolationUpscaler):
    def __init__(self) -> None:
        self.windows: list[tuple[int, int]] = []

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        self.windows += [im.shape[:2] for im in images]
        return super().upscale_batch(images, scale)


class FailsOnMark(CountingBicubic):
    """The model failing on one input pixel (a stand-in for what makes a real model fail)."""

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        if any((im == 7).all(axis=2).any() for im in images):
            raise RuntimeError("NaN in generator output")
        return super().upscale_batch(images, scale)


class UnreadableAtMark:
    """Slides whose LR tile under ``MARK`` cannot be decoded."""

    def __init__(self, root: Path) -> None:
        self.inner = DirectorySlides(root)

    async def open(self, exam_id: str, slide_number: int) -> LrSlide:
        slide = await self.inner.open(exam_id, slide_number)
        read = slide.read_region

        def read_region(x: int, y: int, width: int, height: int) -> np.ndarray:
            if x <= MARK[0] < x + width and y <= MARK[1] < y + height:
                raise SlideError("corrupt JPEG tile")
            return read(x, y, width, height)

        slide.read_region = read_region  # type: ignore[method-assign]  # the test's broken storage
        return slide

    def forget(self, exam_id: str, slide_number: int) -> None:
        self.inner.forget(exam_id, slide_number)


class Harness:
    def __init__(self, root: Path, pixels: np.ndarray, upscaler: CountingBicubic | None = None,
                 slides: object | None = None, **config: object) -> None:
        write_lr_slide(pixels, root / "slides" / lr_key(EXAM, 1))
        self.upscaler = upscaler or CountingBicubic()
        self.events: list[Event] = []
        self.cache = DirectoryTileCache(root / "hr")
        self.leases = LocalLeases()
        self.on_publish: list[Callable[[Event], Awaitable[None]]] = []
        settings = {"max_batch": 6, "lease_poll_s": 0.05, "blocks": True} | config
        self.engine = ComputeEngine(upscaler=self.upscaler, slides=slides or DirectorySlides(root / "slides"),  # type: ignore[arg-type]  # test double
                                    cache=self.cache, leases=self.leases, publish=self._publish,
                                    config=EngineConfig(**settings), worker_id="worker-A")  # type: ignore[arg-type]  # known fields

    async def _publish(self, event: Event) -> None:
        self.events.append(event)
        for hook in self.on_publish:
            await hook(event)

    async def run(self, *requests: UpscaleRequested) -> None:
        for r in requests:
            await self.engine.submit(r)
        task = asyncio.create_task(self.engine.run())
        try:
            await asyncio.wait_for(self.engine.wait_idle(), 60)
        finally:
            self.engine.stop()
            await task

    def answers(self, request: UpscaleRequested) -> list[UpscaleDone | UpscaleFailed]:
        return [e for e in self.events if isinstance(e, UpscaleDone | UpscaleFailed) and e.request_id == request.request_id]

    def results(self, request: UpscaleRequested) -> dict[tuple[int, int], bool]:
        return {(r.tile.col, r.tile.row): r.cached for e in self.answers(request) if isinstance(e, UpscaleDone)
                for r in e.results}


def whole_image(pixels: np.ndarray) -> UpscaleRequested:
    return UpscaleRequested(exam_id=EXAM, slide_number=1, scale=4, priority="interactive",
                            region=Region(x=0, y=0, width=1000, height=720))  # x4: 4 x 3 tiles


def assert_counts_down(answers: list[UpscaleDone | UpscaleFailed], total: int) -> None:
    sizes = [len(a.results) if isinstance(a, UpscaleDone) else len(a.tiles or []) for a in answers]
    assert [a.remaining for a in answers] == [total - s for s in np.cumsum(sizes)]
    assert answers[-1].remaining == 0 and all(a.remaining > 0 for a in answers[:-1])


async def test_blocks_answer_every_tile_once_with_the_pixels_of_the_whole_image(
        tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    request = whole_image(lr_pixels)
    await h.run(request)
    assert h.results(request) == {(c, r): False for c in range(4) for r in range(3)}
    assert_counts_down(h.answers(request), 12)
    assert len(h.answers(request)) == 2  # two batches of 6 tiles, each one window
    assert h.upscaler.windows == [(3 * 64 + 4, 2 * 64 + 4)] * 2  # (height, width): 2 x 3 tiles + margins
    whole = InterpolationUpscaler().upscale_batch([lr_pixels], 4)[0]
    for (col, row) in h.results(request):
        tile = decode_png((await h.cache.get(f"hr/{EXAM}/0001/x4/10/{col}_{row}.png")) or b"")
        y0, x0 = row * TILE_SIZE, col * TILE_SIZE
        np.testing.assert_array_equal(tile, whole[y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]])
    assert h.engine.stats.tiles_computed == 12


async def test_cached_tiles_inside_a_block_are_answered_from_the_cache(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    first = UpscaleRequested(exam_id=EXAM, slide_number=1, scale=4, priority="interactive",
                             tiles=[TileRef(level=10, col=1, row=1)])
    await h.run(first)
    request = whole_image(lr_pixels)
    await h.run(request)
    results = h.results(request)
    assert results.pop((1, 1)) is True
    assert set(results.values()) == {False} and len(results) == 11
    assert h.engine.stats.tiles_computed == 12  # 1 + 11: nothing twice
    assert_counts_down(h.answers(request), 12)


async def test_a_model_error_inside_a_block_fails_that_tile_only(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    pixels = lr_pixels.copy()
    pixels[MARK[1], MARK[0]] = 7
    h = Harness(tmp_path, pixels, upscaler=FailsOnMark())
    request = whole_image(pixels)
    await h.run(request)
    [failure] = [a for a in h.answers(request) if isinstance(a, UpscaleFailed)]
    assert "model error" in failure.reason and [(t.col, t.row) for t in failure.tiles or []] == [(1, 1)]
    assert len(h.results(request)) == 11 and (1, 1) not in h.results(request)
    assert_counts_down(h.answers(request), 12)
    assert h.leases.holder(f"hr/{EXAM}/0001/x4/10/1_1.png") is None
    assert not await h.cache.exists(f"hr/{EXAM}/0001/x4/10/1_1.png")


async def test_an_unreadable_lr_tile_fails_only_the_tiles_it_feeds(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels, slides=UnreadableAtMark(tmp_path / "slides"))
    request = whole_image(lr_pixels)
    await h.run(request)
    [failure] = [a for a in h.answers(request) if isinstance(a, UpscaleFailed)]
    assert "LR tile unreadable" in failure.reason and [(t.col, t.row) for t in failure.tiles or []] == [(1, 1)]
    assert len(h.results(request)) == 11
    assert_counts_down(h.answers(request), 12)


async def test_a_tile_leased_elsewhere_leaves_the_block_and_is_awaited(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels)
    key = f"hr/{EXAM}/0001/x4/10/1_0.png"
    assert await h.leases.acquire(key, "worker-B", ttl_s=60)

    async def worker_b_finishes(event: Event) -> None:
        if isinstance(event, UpscaleDone) and not await h.cache.exists(key):
            await h.cache.put(key, b"tile from B", "image/png")
            await h.leases.release(key, "worker-B")

    h.on_publish.append(worker_b_finishes)
    request = whole_image(lr_pixels)
    await h.run(request)
    results = h.results(request)
    assert results.pop((1, 0)) is True and set(results.values()) == {False}
    assert await h.cache.get(key) == b"tile from B"
    assert_counts_down(h.answers(request), 12)


async def test_interactive_work_preempts_a_background_job_of_blocks(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels, max_batch=4)
    background = UpscaleRequested(exam_id=EXAM, slide_number=1, scale=8, priority="background",
                                  region=Region(x=0, y=0, width=2000, height=1440))  # 8 x 6 tiles
    interactive = UpscaleRequested(exam_id=EXAM, slide_number=1, scale=4, priority="interactive",
                                   tiles=[TileRef(level=10, col=2, row=2)])

    async def viewer_asks(event: Event) -> None:
        if isinstance(event, UpscaleDone) and event.request_id == background.request_id and len(h.answers(background)) == 1:
            await h.engine.submit(interactive)

    h.on_publish.append(viewer_asks)
    await h.run(background)
    order = [e.request_id for e in h.events if isinstance(e, UpscaleDone)]
    assert order[:2] == [background.request_id, interactive.request_id]
    assert set(order[2:]) == {background.request_id}
    assert sorted(h.results(background)) == sorted((c, r) for c in range(8) for r in range(6))
    assert_counts_down(h.answers(background), 48)
    assert h.engine.stats.preemptions == 1
    assert len(h.upscaler.windows) < 48 / 2  # blocks, not one window per tile


async def test_max_margin_caps_the_context_of_every_window(tmp_path: Path, lr_pixels: np.ndarray) -> None:
    h = Harness(tmp_path, lr_pixels, max_margin=1)
    request = whole_image(lr_pixels)
    await h.run(request)
    assert h.upscaler.windows == [(3 * 64 + 2, 2 * 64 + 2)] * 2  # one pixel of context instead of bicubic's 2
    assert len(h.results(request)) == 12
