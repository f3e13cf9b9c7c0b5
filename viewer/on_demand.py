"""On-demand super-resolution for the viewer: tiles a browser asked for that are not in the
hr-cache are gathered for a few milliseconds per slide and sent as one interactive
``upscale.requested`` (the compute service batches a request's neighbouring tiles), never
twice while a request for them is in flight. Answers (from anyone's requests) clear the
in-flight set and become live news for the slide's open browsers."""

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
from schemas.events import TileRef, UpscaleDone, UpscaleRequested
from schemas.topics import PRIORITY_ORDER, Priority
from viewer.live import TileNews, TileNewsHub, news_of

log = structlog.get_logger(__name__)

TileKey = tuple[str, int, int, TileRef]  # exam, slide, scale, tile
Send = Callable[[UpscaleRequested], Awaitable[None]]


@dataclass
class _Asked:
    exam_id: str
    slide_number: int
    scale: int
    tiles: tuple[TileRef, ...]


@dataclass
class OnDemand:
    send: Send
    hub: TileNewsHub
    deadline_s: float = 20.0
    gather_s: float = 0.015  # one viewport's tile requests arrive within a few ms of each other
    max_tiles: int = 256
    clock: Callable[[], float] = time.monotonic
    # tile -> (monotonic expiry, priority rank it was asked at)
    _in_flight: dict[TileKey, tuple[float, int]] = field(default_factory=dict)
    _gathering: dict[tuple[str, int, int, Priority], list[TileRef]] = field(default_factory=dict)
    _asked: dict[UUID, _Asked] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def pending(self, exam_id: str, slide_number: int) -> int:
        now = self.clock()
        return sum(1 for (e, s, _, _), (until, _) in self._in_flight.items() if e == exam_id and s == slide_number
                   and until > now)

    def want(self, exam_id: str, slide_number: int, scale: int, tile: TileRef,
             priority: Priority = Priority.INTERACTIVE) -> bool:
        """Ask for ``tile`` unless it is already asked for at this priority or a higher one
        (a prefetched tile that comes into view is asked again, at interactive priority; the
        compute service answers the later copy from its cache); True if this call asked."""
        key = (exam_id, slide_number, scale, tile)
        now = self.clock()
        until, rank = self._in_flight.get(key, (0.0, len(PRIORITY_ORDER)))
        if until > now and rank <= priority.rank:
            return False
        self._in_flight[key] = (now + self.deadline_s, priority.rank)
        group = (exam_id, slide_number, scale, priority)
        tiles = self._gathering.get(group)
        if tiles is None:
            self._gathering[group] = [tile]
            task = asyncio.get_running_loop().create_task(self._flush_later(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            tiles.append(tile)
            if len(tiles) >= self.max_tiles:
                self._flush_now(group)
        return True

    async def _flush_later(self, group: tuple[str, int, int, Priority]) -> None:
        await asyncio.sleep(self.gather_s)
        tiles = self._gathering.pop(group, None)
        if tiles:
            await self._send_group(group, tiles)

    def _flush_now(self, group: tuple[str, int, int, Priority]) -> None:
        # Taken out of the gathering now, so later wants start a new request.
        tiles = self._gathering.pop(group)
        task = asyncio.get_running_loop().create_task(self._send_group(group, tiles))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_group(self, group: tuple[str, int, int, Priority], tiles: list[TileRef]) -> None:
        exam_id, slide_number, scale, priority = group
        request = UpscaleRequested(exam_id=exam_id, slide_number=slide_number, scale=scale, priority=priority,
                                   tiles=tiles, requested_by="viewer",
                                   deadline=db_now() + timedelta(seconds=self.deadline_s))
        self._asked[request.request_id] = _Asked(exam_id, slide_number, scale, tuple(tiles))
        try:
            await self.send(request)
        except Exception as exc:  # Kafka down: forget the tiles so the next view asks again
            log.warning("viewer.upscale_send_failed", exam_id=exam_id, slide=slide_number,
                        error=type(exc).__name__)
            self._asked.pop(request.request_id, None)
            for tile in tiles:
                self._in_flight.pop((exam_id, slide_number, scale, tile), None)
            self.hub.publish(exam_id, slide_number, TileNews(
                "failed", scale, tuple(tiles), "the compute service could not be reached; showing LR"))

    def on_answer(self, answer: Answer) -> None:
        """Listener of the upscale client: every answer on the topics, ours or not."""
        asked = self._asked.get(answer.request_id)
        if answer.remaining == 0:
            self._asked.pop(answer.request_id, None)
        if isinstance(answer, UpscaleDone):
            scale, tiles = answer.scale, tuple(r.tile for r in answer.results)
        elif asked is not None:
            scale, tiles = asked.scale, tuple(answer.tiles) if answer.tiles else asked.tiles
        else:
            return  # someone else's failure: nothing of ours to clear or report
        for tile in tiles:
            self._in_flight.pop((answer.exam_id, answer.slide_number, scale, tile), None)
        self.hub.publish(answer.exam_id, answer.slide_number,
                         news_of(answer, scale=scale, tiles=tiles))
        self._expire()

    def _expire(self) -> None:
        if len(self._in_flight) < 10_000:
            return
        now = self.clock()
        for key in [key for key, (until, _) in self._in_flight.items() if until <= now]:
            del self._in_flight[key]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

