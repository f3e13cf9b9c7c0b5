"""Live tile news for open browsers: every ``upscale.done`` / ``upscale.failed`` seen by the
viewer's upscale client is fanned out to the subscribers of its slide (Server-Sent Events),
whoever asked for the tiles (another pathologist's request, distribution, export)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from core.upscale_client import Answer
from schemas.events import TileRef, UpscaleDone

SlideKey = tuple[str, int]
QUEUE_LIMIT = 256


@dataclass(frozen=True)
class TileNews:
    kind: Literal["tiles", "failed"]
    scale: int | None  # None: a failure that does not say (upscale.failed carries no scale)
    tiles: tuple[TileRef, ...]
    reason: str = ""
    # Per tile (same order), for tiles computed by this answer: agreement with the stored LR.
    consistency_db: tuple[float | None, ...] = ()

    def sse(self) -> str:
        values = self.consistency_db or (None,) * len(self.tiles)
        data: dict[str, object] = {"scale": self.scale, "tiles": [
            {"level": t.level, "col": t.col, "row": t.row, **({"consistency_db": db} if db is not None else {})}
            for t, db in zip(self.tiles, values, strict=True)]}
        if self.kind == "tiles":
            data["source"] = "computed"
        else:
            data["reason"] = self.reason
        return f"event: {self.kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def news_of(answer: Answer, *, scale: int | None = None, tiles: tuple[TileRef, ...] = ()) -> TileNews:
    """``scale`` and ``tiles``: what the viewer asked for, to name the tiles of a request that
    failed as a whole."""
    if isinstance(answer, UpscaleDone):
        return TileNews("tiles", answer.scale, tuple(result.tile for result in answer.results),
                        consistency_db=tuple(result.consistency_db for result in answer.results))
    return TileNews("failed", scale, tuple(answer.tiles) if answer.tiles else tiles, answer.reason)


@dataclass
class TileNewsHub:
    _subscribers: dict[SlideKey, set[asyncio.Queue[TileNews]]] = field(default_factory=dict)

    @contextlib.contextmanager
    def subscribe(self, exam_id: str, slide_number: int) -> Iterator[asyncio.Queue[TileNews]]:
        queue: asyncio.Queue[TileNews] = asyncio.Queue(QUEUE_LIMIT)
        key = (exam_id, slide_number)
        self._subscribers.setdefault(key, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._subscribers.get(key)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[key]

    def subscribers(self, exam_id: str, slide_number: int) -> int:
        return len(self._subscribers.get((exam_id, slide_number), ()))

    def publish(self, exam_id: str, slide_number: int, news: TileNews) -> None:
        for queue in self._subscribers.get((exam_id, slide_number), ()):
            if queue.full():  # a stalled browser loses old news, not the server's memory
                queue.get_nowait()
            queue.put_nowait(news)
