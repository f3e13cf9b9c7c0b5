"""On-demand SR for the viewer, without Kafka: a viewport's misses become one request, a tile
in flight is not asked for twice, answers clear it and reach the slide's subscribers."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from schemas.common import ObjectRef
from schemas.events import TileRef, UpscaleCancelled, UpscaleDone, UpscaleFailed, UpscaleRequested, UpscaleTileResult
from viewer.live import TileNewsHub
from viewer.on_demand import OnDemand


def tiles(n: int) -> list[TileRef]:
    return [TileRef(level=12, col=c, row=0) for c in range(n)]


def done_for(request: UpscaleRequested, remaining: int = 0) -> UpscaleDone:
    return UpscaleDone(request_id=request.request_id, exam_id=request.exam_id, slide_number=request.slide_number,
                       scale=request.scale, remaining=remaining, model="bicubic",
                       results=[UpscaleTileResult(tile=t, object=ObjectRef(bucket="slidestream-hr-cache", key=f"k{t.col}"),
                                                 cached=False)
                                for t in request.tiles or []])


async def test_a_viewport_of_misses_is_one_request_and_not_repeated() -> None:
    sent: list[UpscaleRequested] = []

    async def send(request: UpscaleRequested) -> None:
        sent.append(request)

    demand = OnDemand(send, TileNewsHub(), gather_s=0.01)
    for tile in tiles(6):
        assert demand.want("E1", 1, 8, tile)
    assert not demand.want("E1", 1, 8, tiles(1)[0])  # already asked
    await asyncio.sleep(0.05)
    assert len(sent) == 1 and sent[0].tiles == tiles(6) and sent[0].priority == "interactive"
    assert sent[0].deadline is not None
    assert demand.pending("E1", 1) == 6
    assert not demand.want("E1", 1, 8, tiles(2)[1])  # in flight: still not asked again
    await demand.close()


async def test_answers_clear_in_flight_and_reach_subscribers() -> None:
    sent: list[UpscaleRequested] = []

    async def send(request: UpscaleRequested) -> None:
        sent.append(request)

    hub = TileNewsHub()
    demand = OnDemand(send, hub, gather_s=0.0)
    with hub.subscribe("E1", 1) as queue, hub.subscribe("E2", 1) as other:
        for tile in tiles(3):
            demand.want("E1", 1, 8, tile)
        await asyncio.sleep(0.02)
        demand.on_answer(done_for(sent[0]))
        news = queue.get_nowait()
        assert news.kind == "tiles" and list(news.tiles) == tiles(3)
        event = news.sse()
        assert event.startswith("event: tiles\n")
        assert json.loads(event.split("data: ")[1])["tiles"][0] == {"level": 12, "col": 0, "row": 0}
        assert other.empty()
        assert demand.pending("E1", 1) == 0
        assert demand.want("E1", 1, 8, tiles(1)[0])  # may be asked again (e.g. evicted later)
    assert hub.subscribers("E1", 1) == 0
    await demand.close()


async def test_a_whole_request_failure_names_the_asked_tiles() -> None:
    sent: list[UpscaleRequested] = []

    async def send(request: UpscaleRequested) -> None:
        sent.append(request)

    hub = TileNewsHub()
    demand = OnDemand(send, hub, gather_s=0.0)
    with hub.subscribe("E1", 1) as queue:
        demand.want("E1", 1, 8, tiles(1)[0])
        await asyncio.sleep(0.02)
        demand.on_answer(UpscaleFailed(request_id=sent[0].request_id, exam_id="E1", slide_number=1,
                                       reason="unknown slide"))
        news = queue.get_nowait()
        assert news.kind == "failed" and list(news.tiles) == tiles(1) and news.reason == "unknown slide"
        # someone else's failure is not ours to report
        demand.on_answer(UpscaleFailed(request_id=uuid.uuid4(), exam_id="E1", slide_number=1, reason="x"))
        assert queue.empty()
    await demand.close()


async def test_a_failed_send_frees_the_tiles_and_says_so() -> None:
    async def send(request: UpscaleRequested) -> None:
        raise ConnectionError("kafka down")

    hub = TileNewsHub()
    demand = OnDemand(send, hub, gather_s=0.0)
    with hub.subscribe("E1", 1) as queue:
        demand.want("E1", 1, 8, tiles(1)[0])
        await asyncio.sleep(0.02)
        assert queue.get_nowait().kind == "failed"
        assert demand.pending("E1", 1) == 0
    await demand.close()


def test_a_stalled_subscriber_keeps_only_recent_news() -> None:
    from viewer.live import QUEUE_LIMIT, TileNews

    hub = TileNewsHub()
    with hub.subscribe("E1", 1) as queue:
        for i in range(QUEUE_LIMIT + 10):
            hub.publish("E1", 1, TileNews("tiles", 8, (TileRef(level=1, col=i, row=0),)))
        assert queue.qsize() == QUEUE_LIMIT
        assert queue.get_nowait().tiles[0].col == 10


@pytest.mark.parametrize("n", [300])
async def test_a_huge_viewport_is_split_at_max_tiles(n: int) -> None:
    sent: list[UpscaleRequested] = []

    async def send(request: UpscaleRequested) -> None:
        sent.append(request)

    demand = OnDemand(send, TileNewsHub(), gather_s=0.01, max_tiles=256)
    for c in range(n):
        demand.want("E1", 1, 8, TileRef(level=12, col=c % 100, row=c // 100))
    await asyncio.sleep(0.05)
    assert sorted(len(r.tiles or []) for r in sent) == [44, 256]
    await demand.close()


async def test_a_prefetched_tile_coming_into_view_is_asked_again_at_interactive() -> None:
    from schemas.topics import Priority

    sent: list[UpscaleRequested] = []

    async def send(request: UpscaleRequested) -> None:
        sent.append(request)

    demand = OnDemand(send, TileNewsHub(), gather_s=0.0)
    tile = tiles(1)[0]
    assert demand.want("E1", 1, 8, tile, Priority.DISTRIBUTION)
    assert not demand.want("E1", 1, 8, tile, Priority.BACKGROUND)  # lower: already covered
    assert demand.want("E1", 1, 8, tile, Priority.INTERACTIVE)
    assert not demand.want("E1", 1, 8, tile, Priority.DISTRIBUTION)
    await asyncio.sleep(0.02)
    assert [r.priority for r in sent] == ["distribution", "interactive"]
    await demand.close()


class CancelRecorder:
    def __init__(self) -> None:
        self.sent: list[UpscaleRequested] = []
        self.cancels: list[UpscaleCancelled] = []

    async def send(self, request: UpscaleRequested) -> None:
        self.sent.append(request)

    async def cancel(self, event: UpscaleCancelled) -> None:
        self.cancels.append(event)


async def test_tiles_a_viewer_moved_away_from_are_cancelled_unless_someone_else_wants_them() -> None:
    wire = CancelRecorder()
    demand = OnDemand(wire.send, TileNewsHub(), gather_s=0.0, cancel=wire.cancel)
    first, second = tiles(6)[:4], tiles(6)[4:]
    for tile in first:
        demand.want("E1", 1, 8, tile, viewer="ann")  # ann pans over four tiles
    demand.want("E1", 1, 8, first[0], viewer="bob")  # bob also looks at the first one
    await asyncio.sleep(0.02)
    assert [r.tiles for r in wire.sent] == [first]
    # ann comes to rest on the last two tiles: two of hers are left, but bob still shows one.
    assert await demand.view_moved("ann", "E1", 1, 8, first[3:] + second) == 2
    [cancel] = wire.cancels
    assert cancel.request_id == wire.sent[0].request_id and cancel.priority == "interactive"
    assert sorted(t.col for t in cancel.tiles) == [1, 2]
    assert demand.pending("E1", 1) == 2  # first[0] for bob, first[3] still on ann's screen
    # A cancelled tile is asked again (a new request) when a viewer comes back to it.
    assert demand.want("E1", 1, 8, first[1], viewer="ann")
    # The compute service's cancelled answer is no news for the browsers.
    hub_queue_before = demand.pending("E1", 1)
    demand.on_answer(UpscaleFailed(request_id=cancel.request_id, exam_id="E1", slide_number=1, reason="cancelled",
                                   tiles=cancel.tiles, remaining=2, cancelled=True))
    assert demand.pending("E1", 1) == hub_queue_before
    # Zoomed out to the LR levels: nothing of ann's is wanted; bob's tile stays.
    await asyncio.sleep(0.02)
    assert await demand.view_moved("ann", "E1", 1, 8, []) == 2  # first[3] and the re-asked first[1]
    assert demand.pending("E1", 1) == 1
    await demand.close()


async def test_without_a_cancel_channel_moving_away_cancels_nothing() -> None:
    wire = CancelRecorder()
    demand = OnDemand(wire.send, TileNewsHub(), gather_s=0.0)
    demand.want("E1", 1, 8, tiles(1)[0], viewer="ann")
    await asyncio.sleep(0.02)
    assert await demand.view_moved("ann", "E1", 1, 8, []) == 0
    assert demand.pending("E1", 1) == 1
    await demand.close()


async def test_a_screen_whose_misses_trickle_in_is_still_one_request_until_a_pause_or_the_cap() -> None:
    sent: list[UpscaleRequested] = []

    async def send(request: UpscaleRequested) -> None:
        sent.append(request)

    # Margins wide enough for a loaded machine: a 10 ms sleep would have to take 200 ms to split.
    demand = OnDemand(send, TileNewsHub(), gather_s=0.2, max_gather_s=5.0)
    stream = tiles(12)
    for tile in stream[:8]:  # a browser's placeholders coming back: a new miss every 10 ms
        demand.want("E1", 1, 8, tile)
        await asyncio.sleep(0.01)
    assert sent == []  # they keep coming: nothing sent yet
    await asyncio.sleep(0.5)  # a pause longer than gather_s: the screen goes out as one request
    assert [r.tiles for r in sent] == [stream[:8]]
    capped = OnDemand(send, TileNewsHub(), gather_s=5.0, max_gather_s=0.08)
    for tile in stream[8:]:  # never a pause, but no request waits more than 80 ms for more
        capped.want("E1", 1, 8, tile)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert len(sent) >= 3 and [t for r in sent[1:] for t in r.tiles] == stream[8:]
    await demand.close()
    await capped.close()
