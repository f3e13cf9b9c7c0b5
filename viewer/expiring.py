"""Values kept for a while, looked up again ahead of their expiry.

The viewer checks the user, the exam and the slide's record on every tile request. Each is
kept for ``ttl_s``; in the second half of that time a request still gets the kept value
while one background load refreshes it, so a busy slide never makes its requests wait for
the catalog together. Past ``ttl_s`` a value is never served: a deactivated user or a
reassigned exam takes effect within ``ttl_s``, as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Flights(Generic[K, V]):
    """One running load per key: whoever asks while it runs shares it. A failure reaches
    whoever awaits it; a load nobody awaits (a refresh ahead) fails quietly."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    def start(self, key: K, load: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(load())
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
            running.add_done_callback(lambda f: f.cancelled() or f.exception())
        return running

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The load's result; a caller that is cancelled does not cancel it for the others."""
        return await asyncio.shield(self.start(key, load))


class Expiring(Generic[K, V]):
    def __init__(self, ttl_s: float, max_items: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_items = max_items
        self.clock = clock
        self._items: dict[K, tuple[float, V]] = {}  # key -> (loaded at, value)
        self._loads: Flights[K, V] = Flights()

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        cached = self._items.get(key)
        if cached is not None:
            age = self.clock() - cached[0]
            if age < self.ttl_s / 2:
                return cached[1]
            if age < self.ttl_s:
                self._loads.start(key, lambda: self._load(key, load))  # refresh ahead; errors surface on the next blocking load
                return cached[1]
        return await self._loads.run(key, lambda: self._load(key, load))

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        loaded_at = self.clock()
        value = await load()
        if len(self._items) >= self.max_items:  # bounded: a flood of names must not grow it
            self._items.clear()
        self._items[key] = (loaded_at, value)
        return value

    def forget(self, key: K) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)
