"""Compare-and-set that holds on every MongoDB-protocol server, FerretDB included.

FerretDB v1 answers an update (``update``, ``findAndModify``) in two steps, a query and then a
write of the whole document it read, with nothing held in between (FerretDB#3040; its SQLite
and PostgreSQL backends share that handler). Two clients filtering on the same ``revision``
can therefore both "win", and any update can overwrite another one that landed between its
query and its write. What every backend does enforce is the unique ``_id``: of two inserts
of one ``_id`` exactly one succeeds.

So a writer first inserts a *claim* whose ``_id`` names the document and the state it
expects to change (``images/E1/1/0@7``); only the claim's holder sends the filtered update,
then deletes its claim. Every other writer expecting the same state waits for that (one
round trip) and then sends its own update, whose filter no longer matches if the holder
changed the state: the claim serialises the writers of one document, and the filter still
decides who wins. Claim keys must name the same fields for every writer of a collection
(images and reports: ``revision``). On MongoDB the update alone would be atomic;
the claim costs two small round trips and keeps one code path for both servers.

A writer that dies between claim and write leaves its claim behind. After ``stale_after`` a
later writer may take the next generation (``...@7#1``, ``#2``), again by insert, so exactly
one writer wins each generation and a dead one blocks its document for ``stale_after`` at
most. This assumes no live writer stalls that long between its claim and its write (one
round trip).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import structlog
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from schemas.catalog import db_now, utc_from_bson

log = structlog.get_logger(__name__)

CLAIMS_COLLECTION = "cas_claims"
DEFAULT_STALE_AFTER = timedelta(seconds=60)
# Generations tried past a dead writer's claim before giving up (each needs a stale claim).
_MAX_GENERATIONS = 8


def state_token(expected: Mapping[str, Any]) -> str:
    """A short, deterministic name for the field values a writer expects."""
    if set(expected) == {"revision"}:
        return str(expected["revision"])
    text = json.dumps(dict(expected), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Claims:
    """Claims in one collection of the catalog database, shared by every writer."""

    def __init__(self, db: AsyncDatabase, *, stale_after: timedelta = DEFAULT_STALE_AFTER,
                 clock: Callable[[], datetime] = db_now) -> None:
        self._coll = db[CLAIMS_COLLECTION]
        self.stale_after = stale_after
        self._clock = clock

    async def take(self, key: str) -> str | None:
        """The id of the claim won on ``key``. While another writer holds it, wait for it to
        finish (one round trip); None only if claims keep piling up for ``stale_after``."""
        generation, poll_s = 0, 0.002
        give_up = self._clock() + 2 * self.stale_after
        while generation < _MAX_GENERATIONS:
            claim_id = key if generation == 0 else f"{key}#{generation}"
            now = self._clock()
            try:
                await self._coll.insert_one({"_id": claim_id, "at": now})
                return claim_id
            except DuplicateKeyError:
                held = await self._coll.find_one({"_id": claim_id})
            if held is None:  # released between our insert and our read: try again
                continue
            at = held.get("at")
            if not isinstance(at, datetime) or now - utc_from_bson(at) >= self.stale_after:
                log.warning("catalog.claim_stale", generation=generation)
                generation += 1
                continue
            if now >= give_up:
                return None
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 2, 0.05)
        return None

    @asynccontextmanager
    async def holding(self, coll: AsyncCollection, doc_id: str, expected: Mapping[str, Any]) -> AsyncIterator[bool]:
        """Hold the claim on ``doc_id`` in the state ``expected`` while the block runs (True),
        or False if another writer kept it; released afterwards either way."""
        claim = await self.take(f"{coll.name}/{doc_id}@{state_token(expected)}")
        try:
            yield claim is not None
        finally:
            if claim is not None:
                await self.release(claim)

    async def release(self, claim_id: str) -> None:
        """Drop a claim and the dead generations before it. A failure only delays the next
        writer that expects the same (now outdated) state, so it is logged, not raised."""
        key, _, generation = claim_id.partition("#")
        ids = [key] + [f"{key}#{g}" for g in range(1, int(generation or 0) + 1)]
        try:
            await self._coll.delete_many({"_id": {"$in": ids}})
        except PyMongoError as exc:
            log.warning("catalog.claim_release_failed", error=type(exc).__name__)


async def compare_and_set(coll: AsyncCollection, claims: Claims, doc_id: str, expected: Mapping[str, Any],
                          update: Mapping[str, Any]) -> dict[str, Any] | None:
    """Apply ``update`` to document ``doc_id`` only if its fields still equal ``expected``;
    the updated document, or None if it changed (or another writer is changing it)."""
    async with claims.holding(coll, doc_id, expected) as held:
        if not held:
            return None
        doc: dict[str, Any] | None = await coll.find_one_and_update(
            {"_id": doc_id, **expected}, dict(update), return_document=ReturnDocument.AFTER)
        return doc


async def compare_and_delete(coll: AsyncCollection, claims: Claims, doc_id: str,
                             expected: Mapping[str, Any]) -> bool:
    """Delete document ``doc_id`` only if its fields still equal ``expected``."""
    async with claims.holding(coll, doc_id, expected) as held:
        return held and (await coll.delete_one({"_id": doc_id, **expected})).deleted_count == 1
