"""Viewer users (SPEC 4 sign-in): one document per user name, the password as a hash only.

Hashing and verification are the viewer's (argon2); this module stores and finds records.
"""

from __future__ import annotations

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalog.claims import Claims, compare_and_set
from catalog.errors import UnknownUser, UserExists
from schemas.catalog import UserRecord


class Users:
    def __init__(self, db: AsyncDatabase, *, claims: Claims | None = None) -> None:
        self.collection = db[UserRecord.collection]
        self.claims = claims or Claims(db)

    async def get(self, username: str) -> UserRecord | None:
        doc = await self.collection.find_one({"_id": username})
        return UserRecord.from_document(doc) if doc else None

    async def add(self, user: UserRecord) -> UserRecord:
        try:
            await self.collection.insert_one({"_id": user.username, **user.to_document()})
        except DuplicateKeyError:
            raise UserExists(user.username) from None
        return user

    async def set_password_hash(self, username: str, old_hash: str, new_hash: str) -> bool:
        """Replace the hash if it is still ``old_hash`` (a rehash after a parameter change
        must not undo a password change made meanwhile)."""
        if await self.get(username) is None:
            raise UnknownUser(username)
        return await compare_and_set(self.collection, self.claims, username, {"password_hash": old_hash},
                                     {"$set": {"password_hash": new_hash}}) is not None

    async def set_active(self, username: str, active: bool) -> None:
        user = await self.get(username)
        if user is None:
            raise UnknownUser(username)
        await compare_and_set(self.collection, self.claims, username, {"active": user.active},
                              {"$set": {"active": active}})

    async def all(self, limit: int = 1000) -> list[UserRecord]:
        cursor = self.collection.find({}).sort("username", ASCENDING).limit(limit)
        return [UserRecord.from_document(doc) async for doc in cursor]
