"""In-flight leases: one worker computes a tile, the others wait for its result.

A lease names a tile key, its owner and an expiry. It is taken before a tile is computed
and dropped after the tile is in the hr-cache; a worker that dies leaves a lease that
simply expires, after which anyone may take the tile over - nothing stays "in flight"
forever. Shared between workers through MongoDB (``MongoLeases``: one document per tile,
the tile key as ``_id``, so the unique index on ``_id`` arbitrates races; works on MongoDB
and FerretDB, which has neither TTL indexes nor transactions). ``LocalLeases`` serves a
single process (tests, bench, a one-worker deployment).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

LEASE_COLLECTION = "upscale_leases"


class LeaseStore(Protocol):
    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take (or renew) the lease on ``key``; False if another owner holds it unexpired."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Drop our lease on ``key`` (no-op if it expired and someone else took it)."""
        ...

    async def purge_expired(self, grace_s: float = 0.0) -> int:
        """Delete leases expired more than ``grace_s`` ago; returns how many."""
        ...


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


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
    """Leases in a MongoDB collection shared by every worker.

    ``acquire`` is one ``find_one_and_update`` with upsert whose filter matches only a
    lease that is ours or expired; if another owner holds it, the upsert's insert collides
    on ``_id`` and the server answers DuplicateKeyError: lease refused. One round trip,
    atomic on the server, no transactions.
    """

    def __init__(self, collection: Any, clock: Callable[[], datetime] = _utc_now) -> None:
        self._coll = collection  # pymongo AsyncCollection
        self._clock = clock

    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        from pymongo.errors import DuplicateKeyError

        now = self._clock()
        try:
            await self._coll.find_one_and_update(
                {"_id": key, "$or": [{"owner": owner}, {"expires_at": {"$lte": now}}]},
                {"$set": {"owner": owner, "acquired_at": now, "expires_at": now + timedelta(seconds=ttl_s)}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    async def release(self, key: str, owner: str) -> None:
        await self._coll.delete_one({"_id": key, "owner": owner})

    async def purge_expired(self, grace_s: float = 0.0) -> int:
        cutoff = self._clock() - timedelta(seconds=grace_s)
        result = await self._coll.delete_many({"expires_at": {"$lte": cutoff}})
        return int(result.deleted_count)

    async def holder(self, key: str) -> str | None:
        doc = await self._coll.find_one({"_id": key, "expires_at": {"$gt": self._clock()}})
        return None if doc is None else str(doc["owner"])
