"""The viewer's per-request lookups (user, exam, slide record): kept, refreshed ahead, bounded."""

from __future__ import annotations

import asyncio

import pytest

from viewer.expiring import Expiring


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A catalog stand-in that counts loads and can be held or made to fail."""

    def __init__(self) -> None:
        self.value = "v1"
        self.loads = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def load(self) -> str:
        self.loads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("catalog down")
        return self.value


async def test_a_value_is_kept_then_refreshed_ahead_of_expiry_without_waiting() -> None:
    clock, source = Clock(), Source()
    cache: Expiring[str, str] = Expiring(10.0, clock=clock)
    assert await cache.get("k", source.load) == "v1"
    clock.now = 4.0
    source.value = "v2"
    assert await cache.get("k", source.load) == "v1" and source.loads == 1  # fresh: no load
    clock.now = 6.0  # second half of its life: served at once, one refresh in the background
    source.gate = asyncio.Event()
    answers = await asyncio.gather(*(cache.get("k", source.load) for _ in range(5)))
    assert answers == ["v1"] * 5 and source.loads == 2
    source.gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await cache.get("k", source.load) == "v2" and source.loads == 2


async def test_a_value_past_its_ttl_is_never_served() -> None:
    clock, source = Clock(), Source()
    cache: Expiring[str, str] = Expiring(10.0, clock=clock)
    await cache.get("k", source.load)
    source.value = "deactivated"
    clock.now = 10.5
    assert await cache.get("k", source.load) == "deactivated"


async def test_concurrent_misses_load_once_and_a_failed_load_is_not_kept() -> None:
    clock, source = Clock(), Source()
    cache: Expiring[str, str] = Expiring(10.0, clock=clock)
    source.gate = asyncio.Event()
    waiting = [asyncio.create_task(cache.get("k", source.load)) for _ in range(6)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*waiting) == ["v1"] * 6 and source.loads == 1
    source.gate, source.fail = None, True
    clock.now = 20.0
    with pytest.raises(ConnectionError):
        await cache.get("k", source.load)
    source.fail = False
    assert await cache.get("k", source.load) == "v1" and source.loads == 3


async def test_a_failed_refresh_ahead_keeps_the_value_until_it_expires() -> None:
    clock, source = Clock(), Source()
    cache: Expiring[str, str] = Expiring(10.0, clock=clock)
    await cache.get("k", source.load)
    source.fail = True
    clock.now = 7.0
    assert await cache.get("k", source.load) == "v1"
    await asyncio.sleep(0)
    assert await cache.get("k", source.load) == "v1"  # the refresh failed; still within its ttl
    clock.now = 11.0
    with pytest.raises(ConnectionError):
        await cache.get("k", source.load)
