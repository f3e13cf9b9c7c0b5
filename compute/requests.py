"""The requests a compute engine is working on: what each still waits for, who to tell when
it is finished, and which Kafka partitions it came from."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime

from compute.slides import LrSlide
from schemas.events import UpscaleRequested
from schemas.topics import Priority


@dataclass
class TrackedRequest:
    request: UpscaleRequested
    priority: Priority
    received_at: float
    slide: LrSlide
    pending: set[str]  # tile keys not yet answered (done or failed)
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    sources: set[Hashable] = field(default_factory=set)  # Kafka partitions it was delivered from
    started: bool = False


TileAt = tuple[int, int, int]  # level, col, row


class EarlyCancels:
    """Cancels that arrived before their request (two topics: either may be read first).
    Kept for ``keep_s`` (a viewer's request deadline), at most ``limit`` of them."""

    def __init__(self, keep_s: float = 60.0, limit: int = 10_000) -> None:
        self.keep_s = keep_s
        self.limit = limit
        self._cancels: dict[Hashable, tuple[float, set[TileAt]]] = {}

    def note(self, key: Hashable, tiles: set[TileAt], now: float) -> None:
        if len(self._cancels) >= self.limit:
            for old in [k for k, (until, _) in self._cancels.items() if until <= now] or list(self._cancels)[:1]:
                del self._cancels[old]
        until, known = self._cancels.get(key, (0.0, set()))
        self._cancels[key] = (now + self.keep_s, known | tiles)

    def take(self, key: Hashable, now: float) -> set[TileAt]:
        until, tiles = self._cancels.pop(key, (0.0, set()))
        return tiles if until > now else set()


class RequestBook:
    def __init__(self) -> None:
        self._requests: dict[Hashable, TrackedRequest] = {}

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, key: object) -> bool:
        return key in self._requests

    def get(self, key: Hashable) -> TrackedRequest | None:
        return self._requests.get(key)

    def __getitem__(self, key: Hashable) -> TrackedRequest:
        return self._requests[key]

    def add(self, key: Hashable, state: TrackedRequest) -> None:
        self._requests[key] = state

    def join(self, key: Hashable, on_finished: Callable[[], None] | None, source: Hashable | None) -> bool:
        """A redelivery of a request in progress joins it (True); False if it is new here."""
        existing = self._requests.get(key)
        if existing is None:
            return False
        if on_finished is not None:
            existing.callbacks.append(on_finished)
        if source is not None:
            existing.sources.add(source)
        return True

    def pop(self, key: Hashable) -> TrackedRequest:
        return self._requests.pop(key)

    def waiting_for(self, key: Hashable, tile_key: str) -> bool:
        state = self._requests.get(key)
        return state is not None and tile_key in state.pending

    def known_sources(self) -> set[Hashable]:
        return {source for state in self._requests.values() for source in state.sources}

    def revoke(self, revoked: set[Hashable]) -> list[Hashable]:
        """Forget ``revoked`` sources; the requests left with none are removed and returned."""
        gone = []
        for key, state in list(self._requests.items()):
            if not state.sources or not state.sources & revoked:
                continue
            state.sources -= revoked
            if not state.sources:
                del self._requests[key]
                gone.append(key)
        return gone

    def lower_priority_started(self, priority: Priority) -> bool:
        """Does a started request of lower priority wait while ``priority`` work runs?"""
        return any(s.started and s.priority.rank > priority.rank for s in self._requests.values())

    def past_deadline(self, now: datetime) -> list[Hashable]:
        return [key for key, state in self._requests.items()
                if state.request.deadline is not None and state.request.deadline <= now]
