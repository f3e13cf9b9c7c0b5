"""The registry of reading terminals (SPEC 2, distribution): who they are, what they read,
how much, and whether they are online.

A terminal signs in with its own key; the registry keeps only the key's SHA-256 digest and
compares digests in constant time. Online state changes are compare-and-sets on
``revision`` (``catalog.claims``), so a heartbeat and the sweep that marks a silent
terminal offline cannot both win.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalog.claims import Claims, compare_and_set
from catalog.errors import CatalogError
from core.secrets import key_digest
from schemas.catalog import TerminalRecord, db_now

_CAS_ATTEMPTS = 20


class UnknownTerminal(CatalogError, LookupError):
    def __init__(self, terminal_id: str) -> None:
        super().__init__(f"terminal {terminal_id} is not registered")
        self.terminal_id = terminal_id


class TerminalExists(CatalogError):
    def __init__(self, terminal_id: str) -> None:
        super().__init__(f"terminal {terminal_id} is already registered")
        self.terminal_id = terminal_id


class Terminals:
    def __init__(self, db: AsyncDatabase, claims: Claims | None = None) -> None:
        self.coll = db[TerminalRecord.collection]
        self.claims = claims or Claims(db)

    async def register(self, terminal: TerminalRecord) -> TerminalRecord:
        try:
            await self.coll.insert_one({"_id": terminal.terminal_id, **terminal.to_document()})
        except DuplicateKeyError:
            raise TerminalExists(terminal.terminal_id) from None
        return terminal

    async def get(self, terminal_id: str) -> TerminalRecord | None:
        doc = await self.coll.find_one({"_id": terminal_id})
        return TerminalRecord.from_document(doc) if doc else None

    async def authenticate(self, terminal_id: str, key: str) -> TerminalRecord | None:
        """The active terminal whose key this is, or None (unknown, retired or wrong key)."""
        terminal = await self.get(terminal_id)
        shown = key_digest(key)
        known = terminal.key_digest if terminal is not None else "0" * 64
        if not hmac.compare_digest(shown, known) or terminal is None or not terminal.active:
            return None
        return terminal

    async def all(self) -> list[TerminalRecord]:
        """Every registered terminal (a hospital has tens to hundreds: one small read)."""
        return [TerminalRecord.from_document(doc) async for doc in self.coll.find({}).sort("_id", 1)]

    async def _change(self, terminal_id: str, change: dict[str, object],
                      still: Callable[[TerminalRecord], bool] | None = None) -> tuple[TerminalRecord, bool]:
        """Apply ``change`` by compare-and-set, retried on a concurrent change; ``still``
        (a predicate on the fresh record) may call it off. The record as it is now, and
        whether this call changed it."""
        for _ in range(_CAS_ATTEMPTS):
            current = await self.get(terminal_id)
            if current is None:
                raise UnknownTerminal(terminal_id)
            if still is not None and not still(current):
                return current, False
            doc = await compare_and_set(self.coll, self.claims, terminal_id, {"revision": current.revision},
                                        {"$set": change, "$inc": {"revision": 1}})
            if doc is not None:
                return TerminalRecord.from_document(doc), True
        raise CatalogError(f"terminal {terminal_id} kept changing; gave up after {_CAS_ATTEMPTS} attempts")

    async def heartbeat(self, terminal_id: str, at: datetime | None = None) -> tuple[TerminalRecord, bool]:
        """Record a heartbeat; also whether the terminal came (back) online with it. A retired
        terminal stays offline (its key is refused anyway; this closes the race with a retire)."""
        at = at or db_now()
        before = await self.get(terminal_id)
        if before is None:
            raise UnknownTerminal(terminal_id)
        after, changed = await self._change(terminal_id, {"online": True, "last_heartbeat": at},
                                            still=lambda t: t.active)
        return after, changed and not before.online

    async def mark_offline(self, terminal_id: str, silent_since: datetime) -> bool:
        """Mark the terminal offline if it is still silent since ``silent_since`` (a heartbeat
        that lands meanwhile wins); True if this call took it offline."""
        def still_silent(t: TerminalRecord) -> bool:
            return t.online and (t.last_heartbeat is None or t.last_heartbeat <= silent_since)

        before = await self.get(terminal_id)
        if before is None or not still_silent(before):
            return False
        _, changed = await self._change(terminal_id, {"online": False}, still=still_silent)
        return changed

    async def set_active(self, terminal_id: str, active: bool) -> TerminalRecord:
        """Retire (False: never assigned again, its key refused, its open exams reassigned by
        the next sweep) or reinstate a terminal."""
        record, _ = await self._change(terminal_id, {"active": active, **({} if active else {"online": False})})
        return record

    async def set_key(self, terminal_id: str, digest: str) -> TerminalRecord:
        """A new key (rotation): the old one stops working at once."""
        record, _ = await self._change(terminal_id, {"key_digest": digest})
        return record
