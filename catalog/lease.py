"""A time-limited lease in the catalog database, so only one worker runs a singleton job
(the idle-time tier sweep) at a time, without relying on Kafka leader election.

One document per lease in ``leases``: taking it is a single conditional upsert (free, expired,
or already ours), which MongoDB and FerretDB both do atomically on one document.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schemas.catalog import db_now

COLLECTION = "leases"


class Lease:
    def __init__(self, db: AsyncDatabase, name: str, holder: str, ttl: timedelta) -> None:
        self._coll = db[COLLECTION]
        self.name = name
        self.holder = holder
        self.ttl = ttl

    async def acquire(self, now: datetime | None = None) -> bool:
        """Take or renew the lease; False while another live holder has it."""
        now = now or db_now()
        flt = {"_id": self.name, "$or": [{"holder": self.holder}, {"expires_at": {"$lt": now}}]}
        try:
            await self._coll.update_one(flt, {"$set": {"holder": self.holder, "expires_at": now + self.ttl}},
                                        upsert=True)
        except DuplicateKeyError:  # the document exists and names a live holder
            return False
        doc = await self._coll.find_one({"_id": self.name})
        return doc is not None and doc.get("holder") == self.holder

    async def release(self) -> None:
        await self._coll.delete_one({"_id": self.name, "holder": self.holder})
