"""In-flight leases: one worker computes a tile, the others wait for its result.

A lease names a tile key, its owner and an expiry. It is taken before a tile is computed
and dropped after the tile is in the hr-cache; a worker that dies leaves a lease that
simply expires, after which anyone may take the tile over - nothing stays "in flight"
forever. Shared between workers through MongoDB (``MongoLeases``: one document per tile,
the tile key as ``_id``; ``catalog.lease`` keeps one owner per key on MongoDB and FerretDB,
which has neither TTL indexes nor atomic updates). ``LocalLeases`` serves a
single process (tests, bench, a one-worker deployment).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from catalog.lease import Leases

LEASE_COLLECTION = "upscale_leases"


class LeaseStore(Protocol):
    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take (or renew) the lease on ``key``; False if another owner holds it unexpired."""
        ...

    async def acquire_many(self, keys: list[str], owner: str, ttl_s: float) -> dict[str, bool]:
        """``acquire`` on each key (a batch's tiles), in as few round trips as the store allows."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Drop our lease on ``key`` (no-op if it expired and someone else took it)."""
        ...

    async def purge_expired(self, grace_s: float = 0.0) -> int:
        """Delete leases expired more than ``grace_s`` ago; returns how many."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocalLeases:
    """Leases in this process's memory."""

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock
        self._leases: dict[str, tuple[str, datetime]] = {}

    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        now = self._clock()
        held = self._leases.get(key)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._leases[key] = (owner, now + timedelta(seconds=ttl_s))
        return True

    async def acquire_many(self, keys: list[str], owner: str, ttl_s: float) -> dict[str, bool]:
        return {key: await self.acquire(key, owner, ttl_s) for key in keys}

    async def release(self, key: str, owner: str) -> None:
        held = self._leases.get(key)
        if held is not None and held[0] == owner:
            del self._leases[key]

    async def purge_expired(self, grace_s: float = 0.0) -> int:
        cutoff = self._clock() - timedelta(seconds=grace_s)
        expired = [k for k, (_, until) in self._leases.items() if until <= cutoff]
        for key in expired:
            del self._leases[key]
        return len(expired)

    def holder(self, key: str) -> str | None:
        held = self._leases.get(key)
        return held[0] if held is not None and held[1] > self._clock() else None


class MongoLeases:
    """Leases in a MongoDB collection shared by every worker: ``catalog.lease.Leases`` (one
    owner per key on MongoDB and FerretDB alike) behind this module's seconds-based API."""

    def __init__(self, collection: Any, clock: Callable[[], datetime] = _utc_now) -> None:
        self._leases = Leases(collection, clock=clock)

    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        return await self._leases.acquire(key, owner, timedelta(seconds=ttl_s))

    async def acquire_many(self, keys: list[str], owner: str, ttl_s: float) -> dict[str, bool]:
        return await self._leases.acquire_many(keys, owner, timedelta(seconds=ttl_s))

    async def release(self, key: str, owner: str) -> None:
        await self._leases.release(key, owner)

    async def purge_expired(self, grace_s: float = 0.0) -> int:
        return await self._leases.purge_expired(timedelta(seconds=grace_s))

    async def holder(self, key: str) -> str | None:
        return await self._leases.holder(key)
