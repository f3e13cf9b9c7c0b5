"""Time-limited leases in the catalog database: one owner at a time per key, and a dead
owner's lease simply expires. Used for singleton jobs (the idle-time tier sweep), for one
worker per tier move, and by compute for one worker per HR tile.

One document per lease (``_id`` = key, ``owner``, ``expires_at``). A free key is taken by
insert (the unique ``_id`` decides); a lease that is ours or expired is renewed or taken
over through ``catalog.claims.compare_and_set`` on the (owner, expiry) we read, so two
workers can never both hold it, on MongoDB and on FerretDB alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import structlog
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from catalog.claims import Claims, compare_and_delete, compare_and_set
from schemas.catalog import db_now, utc_from_bson

log = structlog.get_logger(__name__)

COLLECTION = "leases"
DUPLICATE_KEY = 11000  # MongoDB's (and FerretDB's) error code for a taken unique key


def _state(held: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every writer of a lease compares (and claims) on."""
    return {"owner": held.get("owner"), "expires_at": held.get("expires_at")}


def _live(held: Mapping[str, Any] | None, now: datetime) -> bool:
    expires = held.get("expires_at") if held else None
    return isinstance(expires, datetime) and utc_from_bson(expires) > now


class Leases:
    """Leases on many keys in one collection."""

    def __init__(self, coll: AsyncCollection, *, claims: Claims | None = None,
                 clock: Callable[[], datetime] = db_now) -> None:
        self._coll = coll
        self._claims = claims or Claims(coll.database, clock=clock)
        self._clock = clock

    async def acquire(self, key: str, owner: str, ttl: timedelta, *, now: datetime | None = None) -> bool:
        """Take or renew the lease on ``key``; False while another owner holds it unexpired."""
        now = now or self._clock()
        fresh = {"owner": owner, "acquired_at": now, "expires_at": now + ttl}
        held = await self._coll.find_one({"_id": key})
        if held is None:
            try:
                await self._coll.insert_one({"_id": key, **fresh})
                return True
            except DuplicateKeyError:
                return False  # another worker took the free key first
        if held.get("owner") != owner and _live(held, now):
            return False
        if held.get("owner") == owner:
            fresh["acquired_at"] = held.get("acquired_at", now)
        return await compare_and_set(self._coll, self._claims, key, _state(held), {"$set": fresh}) is not None

    async def acquire_many(self, keys: list[str], owner: str, ttl: timedelta) -> dict[str, bool]:
        """``acquire`` for many keys in few round trips (a viewport's tiles): one read of
        them all, one unordered insert of the free ones (the unique ``_id`` still decides each
        race), and ``acquire`` one by one only for keys that already had a lease document."""
        now = self._clock()
        held = {doc["_id"] async for doc in self._coll.find({"_id": {"$in": keys}}, {"_id": 1})}
        free = [key for key in dict.fromkeys(keys) if key not in held]
        granted: dict[str, bool] = dict.fromkeys(free, True)
        if free:
            fresh = {"owner": owner, "acquired_at": now, "expires_at": now + ttl}
            try:
                await self._coll.insert_many([{"_id": key, **fresh} for key in free], ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(error.get("code") != DUPLICATE_KEY for error in errors):
                    raise
                for error in errors:  # another worker inserted these first
                    granted[free[error["index"]]] = False
        taken = [key for key in dict.fromkeys(keys) if key in held]
        for key, ok in zip(taken, await asyncio.gather(*(self.acquire(key, owner, ttl, now=now) for key in taken))):
            granted[key] = ok
        return granted

    async def release(self, key: str, owner: str) -> None:
        """Drop our lease on ``key`` (nothing happens if someone else holds it now)."""
        held = await self._coll.find_one({"_id": key})
        if held is not None and held.get("owner") == owner:
            await compare_and_delete(self._coll, self._claims, key, _state(held))

    async def holder(self, key: str) -> str | None:
        held = await self._coll.find_one({"_id": key})
        return str(held["owner"]) if held is not None and _live(held, self._clock()) else None

    async def purge_expired(self, grace: timedelta = timedelta(0)) -> int:
        """Delete leases expired more than ``grace`` ago, each only if nobody renewed it."""
        purged = 0
        cursor = self._coll.find({"expires_at": {"$lte": self._clock() - grace}})
        async for held in cursor:
            purged += await compare_and_delete(self._coll, self._claims, held["_id"], _state(held))
        return purged

    async def wait_for(self, key: str, owner: str, ttl: timedelta, *, timeout: timedelta,
                       poll_s: float = 0.05) -> bool:
        """Acquire, waiting up to ``timeout`` for the holder to release it or let it expire."""
        deadline = self._clock() + timeout
        while True:
            if await self.acquire(key, owner, ttl):
                return True
            if self._clock() >= deadline:
                return False
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 2, 0.2)

    @asynccontextmanager
    async def held(self, key: str, owner: str, ttl: timedelta, *, wait: timedelta) -> AsyncIterator[bool]:
        """Hold the lease (True) while the block runs, renewed every third of ``ttl`` and
        released afterwards; False if another live owner kept it for ``wait``."""
        if not await self.wait_for(key, owner, ttl, timeout=wait):
            yield False
            return

        async def renew() -> None:
            while True:
                await asyncio.sleep(ttl.total_seconds() / 3)
                try:
                    await self.acquire(key, owner, ttl)
                except Exception as exc:  # noqa: BLE001 - the holder's compare-and-set steps still guard it
                    log.warning("lease.renewal_failed", key=key, error=type(exc).__name__)

        heartbeat = asyncio.create_task(renew())
        try:
            yield True
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            try:
                await self.release(key, owner)
            except Exception as exc:  # noqa: BLE001 - it expires by itself
                log.warning("lease.release_failed", key=key, error=type(exc).__name__)


class Lease:
    """One named lease held by one worker (e.g. the tier sweep)."""

    def __init__(self, db: AsyncDatabase, name: str, holder: str, ttl: timedelta) -> None:
        self._leases = Leases(db[COLLECTION])
        self.name = name
        self.holder = holder
        self.ttl = ttl

    async def acquire(self, now: datetime | None = None) -> bool:
        """Take or renew the lease; False while another live holder has it."""
        return await self._leases.acquire(self.name, self.holder, self.ttl, now=now)

    async def release(self) -> None:
        await self._leases.release(self.name, self.holder)
