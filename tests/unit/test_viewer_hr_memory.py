"""hr-cache tiles in the viewer's memory: one GET per tile, dropped when written again, and
read ahead when an answer arrives for a slide someone has open."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from core.settings import ViewerSettings
from schemas.common import ObjectRef
from schemas.events import TileRef, UpscaleDone, UpscaleTileResult
from viewer.live import TileNewsHub
from viewer.tile_service import TileService

TILE = TileRef(level=14, col=3, row=4)


class CountingStore:
    """Only what the tile reads touch: ``ref`` and ``get_with_metadata``, counted."""

    def __init__(self) -> None:
        self.gets: list[str] = []
        self.body = b"png-1"
        self.gate: asyncio.Event | None = None

    def ref(self, tier: object, key: str) -> ObjectRef:
        return ObjectRef(bucket="hr-cache", key=key)

    async def get_with_metadata(self, ref: ObjectRef) -> tuple[bytes, dict[str, str]]:
        self.gets.append(ref.key)
        if self.gate is not None:
            await self.gate.wait()
        return self.body, {"consistency-db": "41.5"}


def service(store: CountingStore, hub: TileNewsHub | None = None, memory: int = 1 << 20) -> TileService:
    return TileService(None, store, ViewerSettings(), hr_memory_bytes=memory, hub=hub)  # type: ignore[arg-type]  # no catalog needed here


def done(tiles: list[TileRef]) -> UpscaleDone:
    return UpscaleDone(request_id=uuid.uuid4(), exam_id="E1", slide_number=1, scale=8, model="m",
                       results=[UpscaleTileResult(tile=t, object=ObjectRef(bucket="hr-cache", key="k"), cached=False)
                                for t in tiles])


async def test_concurrent_reads_of_one_tile_make_one_get_and_later_reads_none() -> None:
    store = CountingStore()
    tiles = service(store)
    store.gate = asyncio.Event()
    reads = [asyncio.create_task(tiles._hr_tile("E1", 1, 8, TILE, False)) for _ in range(6)]
    await asyncio.sleep(0)
    store.gate.set()
    got = await asyncio.gather(*reads)
    assert len(store.gets) == 1
    assert all(t is not None and t.body == b"png-1" and t.source == "computed" and t.consistency_db == 41.5
               for t in got)
    assert (await tiles._hr_tile("E1", 1, 8, TILE, False)) is got[0] and len(store.gets) == 1


async def test_an_answer_drops_the_kept_tile_so_a_rewrite_is_read_again() -> None:
    store = CountingStore()
    tiles = service(store)
    await tiles._hr_tile("E1", 1, 8, TILE, False)
    store.body = b"png-2"
    tiles.on_answer(done([TILE]))  # no hub: nothing read ahead, only dropped
    again = await tiles._hr_tile("E1", 1, 8, TILE, False)
    assert again is not None and again.body == b"png-2" and len(store.gets) == 2


async def test_a_slide_that_became_scanned_is_not_served_its_computed_tiles_from_memory() -> None:
    store = CountingStore()
    tiles = service(store)
    await tiles._hr_tile("E1", 1, 8, TILE, False)
    scanned = await tiles._hr_tile("E1", 1, 8, TILE, True)
    assert scanned is not None and scanned.source == "scanned" and len(store.gets) == 2


async def test_without_memory_every_read_goes_to_the_store() -> None:
    store = CountingStore()
    tiles = service(store, memory=0)
    for _ in range(3):
        await tiles._hr_tile("E1", 1, 8, TILE, False)
    assert len(store.gets) == 3


async def test_answers_for_an_open_slide_are_read_ahead_and_others_are_not() -> None:
    from viewer.deepzoom import SlideView
    from viewer.tile_service import _SlideEntry

    store = CountingStore()
    hub = TileNewsHub()
    tiles = service(store, hub)
    entry = _SlideEntry(None, SlideView(4000, 3000, 8, 5.0), False)  # type: ignore[arg-type]  # the image record is not read

    async def load(exam_id: str, slide_number: int) -> _SlideEntry:
        return entry

    tiles._load_entry = load  # type: ignore[method-assign]  # the catalog lookup, answered here
    others = [TileRef(level=TILE.level, col=c, row=0) for c in range(3)]
    tiles.on_answer(done(others))  # nobody has E1/1 open
    await asyncio.sleep(0.01)
    assert store.gets == []
    with hub.subscribe("E1", 1):
        tiles.on_answer(done(others))
        await asyncio.sleep(0.01)
    assert len(store.gets) == 3
    await tiles._hr_tile("E1", 1, 8, others[0], False)
    assert len(store.gets) == 3  # the browser's request is answered from memory
    await tiles.close()


@pytest.mark.parametrize("budget", [0, 20, 10_000])
async def test_opening_a_slide_cuts_its_lr_levels_from_the_smallest_up_within_the_budget(budget: int) -> None:
    from schemas.layout import tile_grid
    from viewer.deepzoom import SlideView
    from viewer.tile_service import _SlideEntry

    view = SlideView(2000, 1500, 8, 5.0)
    tiles = TileService(None, CountingStore(), ViewerSettings(), precut_tiles=budget)  # type: ignore[arg-type]  # no catalog needed here
    cut: list[tuple[int, int, int]] = []

    async def entry(exam_id: str, slide_number: int) -> _SlideEntry:
        return _SlideEntry(None, view, False)  # type: ignore[arg-type]  # the image record is not read

    async def opened(exam_id: str, slide_number: int) -> None:
        return None

    async def cut_uncached(exam_id: str, slide_number: int, v: SlideView, level: int, col: int, row: int,
                           media_type: str) -> bytes:
        cut.append((level, col, row))
        return b"jpeg"

    tiles._load_entry, tiles._open, tiles._cut_uncached = entry, opened, cut_uncached  # type: ignore[method-assign, assignment]  # the LR reads, answered here
    await tiles._warm("E1", 1)
    sizes = [tile_grid(view.width, view.height, level) for level in range(view.lr_level + 1)]
    expected, left = [], budget
    for level, (cols, rows) in enumerate(sizes):
        left -= cols * rows
        if left < 0:
            break
        expected += [(level, c, r) for r in range(rows) for c in range(cols)]
    assert cut == expected
    if budget == 10_000:
        assert {level for level, _, _ in cut} == set(range(view.lr_level + 1))  # a small slide: all of it
    # a browser asking for a tile cut ahead gets it without another cut
    if cut:
        await tiles._cut("E1", 1, view, *cut[-1], "image/jpeg")
        assert len(cut) == len(expected)
