"""On-demand super-resolution for the viewer: tiles a browser asked for that are not in the
hr-cache are gathered for a few milliseconds per slide and sent as one interactive
``upscale.requested`` (the compute service batches a request's neighbouring tiles), never
twice while a request for them is in flight. Answers (from anyone's requests) clear the
in-flight set and become live news for the slide's open browsers.

Each browser view says what it shows (``view_moved``: visible tiles and the prefetch ring).
Tiles still in flight that no open view wants any more - the pathologist panned or zoomed
away - are cancelled (``upscale.cancelled``), so the compute service drops them before
computing them and spends the time on what is on screen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

import structlog

from core.upscale_client import Answer
from schemas.catalog import db_now
from schemas.events import TileRef, UpscaleCancelled, UpscaleDone, UpscaleFailed, UpscaleRequested
from schemas.topics import PRIORITY_ORDER, Priority
from viewer.live import TileNews, TileNewsHub, news_of

log = structlog.get_logger(__name__)

TileKey = tuple[str, int, int, TileRef]  # exam, slide, scale, tile
Send = Callable[[UpscaleRequested], Awaitable[None]]
Cancel = Callable[[UpscaleCancelled], Awaitable[None]]
MAX_VIEWS = 1000  # open browser views remembered (oldest forgotten first)


@dataclass
class _Asked:
    exam_id: str
    slide_number: int
    scale: int
    tiles: tuple[TileRef, ...]


@dataclass
class _Gathering:
    tiles: list[TileRef]
    first: float  # event-loop time of the first and the latest tile
    last: float


@dataclass
class OnDemand:
    send: Send
    hub: TileNewsHub
    deadline_s: float = 20.0
    # A browser asks for a screen's tiles six at a time, each next one as soon as a placeholder
    # comes back, so a screen's misses arrive as a stream. They are gathered until ``gather_s``
    # passes without a new one (at most ``max_gather_s`` after the first) and sent as one
    # request. Longer gathering (50 ms) merged more of a screen but made it sharp later on 2
    # cores (1.9-2.1 s against 1.4-1.7 s): the first batch starts computing while the viewer is
    # still cutting the rest of the screen's placeholders.
    gather_s: float = 0.015
    max_gather_s: float = 0.12
    max_tiles: int = 256
    clock: Callable[[], float] = time.monotonic
    cancel: Cancel | None = None  # None: tiles nobody wants any more run to their deadline
    # tile -> (monotonic expiry, priority rank it was asked at)
    _in_flight: dict[TileKey, tuple[float, int]] = field(default_factory=dict)
    _request_of: dict[TileKey, tuple[UUID, Priority]] = field(default_factory=dict)  # the latest ask
    _views: dict[str, set[TileKey]] = field(default_factory=dict)  # browser view -> tiles it shows or prefetches
    _gathering: dict[tuple[str, int, int, Priority], _Gathering] = field(default_factory=dict)
    _asked: dict[UUID, _Asked] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def pending(self, exam_id: str, slide_number: int) -> int:
        now = self.clock()
        return sum(1 for (e, s, _, _), (until, _) in self._in_flight.items() if e == exam_id and s == slide_number
                   and until > now)

    def want(self, exam_id: str, slide_number: int, scale: int, tile: TileRef,
             priority: Priority = Priority.INTERACTIVE, viewer: str | None = None) -> bool:
        """Ask for ``tile`` unless it is already asked for at this priority or a higher one
        (a prefetched tile that comes into view is asked again, at interactive priority; the
        compute service answers the later copy from its cache); True if this call asked.
        ``viewer``: whose view the tile is in, until their next ``view_moved``."""
        key = (exam_id, slide_number, scale, tile)
        if viewer is not None:
            self._view_of(viewer).add(key)
        now = self.clock()
        until, rank = self._in_flight.get(key, (0.0, len(PRIORITY_ORDER)))
        if until > now and rank <= priority.rank:
            return False
        self._in_flight[key] = (now + self.deadline_s, priority.rank)
        group = (exam_id, slide_number, scale, priority)
        loop = asyncio.get_running_loop()
        gathering = self._gathering.get(group)
        if gathering is None:
            self._gathering[group] = _Gathering([tile], loop.time(), loop.time())
            task = loop.create_task(self._flush_later(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            gathering.tiles.append(tile)
            gathering.last = loop.time()
            if len(gathering.tiles) >= self.max_tiles:
                self._flush_now(group)
        return True

    async def _flush_later(self, group: tuple[str, int, int, Priority]) -> None:
        loop = asyncio.get_running_loop()
        while (gathering := self._gathering.get(group)) is not None:
            due = min(gathering.last + self.gather_s, gathering.first + self.max_gather_s)
            if loop.time() >= due:
                break
            await asyncio.sleep(due - loop.time())
        gathering = self._gathering.pop(group, None)
        if gathering is not None and gathering.tiles:
            await self._send_group(group, gathering.tiles)

    def _flush_now(self, group: tuple[str, int, int, Priority]) -> None:
        # Taken out of the gathering now, so later wants start a new request.
        tiles = self._gathering.pop(group).tiles
        task = asyncio.get_running_loop().create_task(self._send_group(group, tiles))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_group(self, group: tuple[str, int, int, Priority], tiles: list[TileRef]) -> None:
        exam_id, slide_number, scale, priority = group
        request = UpscaleRequested(exam_id=exam_id, slide_number=slide_number, scale=scale, priority=priority,
                                   tiles=tiles, requested_by="viewer",
                                   deadline=db_now() + timedelta(seconds=self.deadline_s))
        self._asked[request.request_id] = _Asked(exam_id, slide_number, scale, tuple(tiles))
        for tile in tiles:
            self._request_of[(exam_id, slide_number, scale, tile)] = (request.request_id, priority)
        try:
            await self.send(request)
        except Exception as exc:  # Kafka down: forget the tiles so the next view asks again
            log.warning("viewer.upscale_send_failed", exam_id=exam_id, slide=slide_number,
                        error=type(exc).__name__)
            self._asked.pop(request.request_id, None)
            for tile in tiles:
                self._in_flight.pop((exam_id, slide_number, scale, tile), None)
                self._request_of.pop((exam_id, slide_number, scale, tile), None)
            self.hub.publish(exam_id, slide_number, TileNews(
                "failed", scale, tuple(tiles), "the compute service could not be reached; showing LR"))

    def _view_of(self, viewer: str) -> set[TileKey]:
        view = self._views.get(viewer)
        if view is None:
            view = self._views[viewer] = set()
            while len(self._views) > MAX_VIEWS:  # the oldest view goes first
                del self._views[next(iter(self._views))]
        return view

    async def view_moved(self, viewer: str, exam_id: str, slide_number: int, scale: int,
                         tiles: list[TileRef]) -> int:
        """``viewer`` now shows/prefetches ``tiles`` (empty: a level below the SR levels).
        Tiles they asked for or were shown before (any slide) that no viewer wants now and
        that are still in flight are cancelled; returns how many."""
        now_wanted = {(exam_id, slide_number, scale, tile) for tile in tiles}
        before = self._views.pop(viewer, set())
        self._views[viewer] = now_wanted  # re-inserted: the most recently moved view is last
        released = before - now_wanted
        if not released or self.cancel is None:
            return 0
        others: set[TileKey] = set().union(*(v for k, v in self._views.items() if k != viewer))
        now = self.clock()
        by_request: dict[tuple[UUID, Priority], list[TileKey]] = {}
        for key in released - others:
            until, _ = self._in_flight.get(key, (0.0, 0))
            asked = self._request_of.get(key)
            if until > now and asked is not None:
                by_request.setdefault(asked, []).append(key)
        for (request_id, priority), keys in by_request.items():
            exam, slide = keys[0][0], keys[0][1]
            event = UpscaleCancelled(request_id=request_id, exam_id=exam, slide_number=slide, priority=priority,
                                     tiles=[k[3] for k in keys])
            try:
                await self.cancel(event)
            except Exception as exc:  # Kafka down: the tiles are computed anyway, nothing lost
                log.warning("viewer.upscale_cancel_failed", exam_id=exam, slide=slide, error=type(exc).__name__)
                continue
            for key in keys:  # asked again (a new request) if a view comes back to them
                self._in_flight.pop(key, None)
                self._request_of.pop(key, None)
        return sum(len(keys) for keys in by_request.values())

    def on_answer(self, answer: Answer) -> None:
        """Listener of the upscale client: every answer on the topics, ours or not."""
        asked = self._asked.get(answer.request_id)
        if answer.remaining == 0:
            self._asked.pop(answer.request_id, None)
        if isinstance(answer, UpscaleFailed) and answer.cancelled:
            return  # our own cancel (in-flight state already cleared): no news for browsers
        if isinstance(answer, UpscaleDone):
            scale, tiles = answer.scale, tuple(r.tile for r in answer.results)
        elif asked is not None:
            scale, tiles = asked.scale, tuple(answer.tiles) if answer.tiles else asked.tiles
        else:
            return  # someone else's failure: nothing of ours to clear or report
        for tile in tiles:
            key = (answer.exam_id, answer.slide_number, scale, tile)
            self._in_flight.pop(key, None)
            self._request_of.pop(key, None)
        self.hub.publish(answer.exam_id, answer.slide_number,
                         news_of(answer, scale=scale, tiles=tiles))
        self._expire()

    def _expire(self) -> None:
        if len(self._in_flight) < 10_000:
            return
        now = self.clock()
        for key in [key for key, (until, _) in self._in_flight.items() if until <= now]:
            del self._in_flight[key]
            self._request_of.pop(key, None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

