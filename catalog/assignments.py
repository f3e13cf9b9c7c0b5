"""Exam -> terminal assignments (SPEC 2, distribution): one document per exam.

The document's ``_id`` is the exam, so creating one is an insert that exactly one writer
wins (an exam is never assigned twice, on any backend); every later change (slides added,
reassigned, done) is a compare-and-set on ``revision`` through ``catalog.claims``.
Which terminal gets an exam is the distribution service's decision; this module only
stores it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from catalog.claims import Claims, compare_and_set
from catalog.errors import CatalogError
from schemas.catalog import AssignmentRecord, AssignmentState, db_now

_CAS_ATTEMPTS = 20


class Assignments:
    def __init__(self, db: AsyncDatabase, claims: Claims | None = None) -> None:
        self.coll = db[AssignmentRecord.collection]
        self.claims = claims or Claims(db)

    async def get(self, exam_id: str) -> AssignmentRecord | None:
        doc = await self.coll.find_one({"_id": exam_id})
        return AssignmentRecord.from_document(doc) if doc else None

    async def create(self, assignment: AssignmentRecord) -> tuple[AssignmentRecord, bool]:
        """Insert ``assignment``; (the stored record, True) if this call created it, or
        (the existing record, False) if the exam already had one."""
        try:
            await self.coll.insert_one({"_id": assignment.exam_id, **assignment.to_document()})
            return assignment, True
        except DuplicateKeyError:
            existing = await self.get(assignment.exam_id)
            if existing is None:  # deleted in between: cannot happen (assignments are kept)
                raise CatalogError(f"assignment of exam {assignment.exam_id} vanished") from None
            return existing, False

    async def update(self, exam_id: str,
                     change: Callable[[AssignmentRecord], AssignmentRecord | None]) -> AssignmentRecord | None:
        """Apply ``change`` (a pure function of the current record: the new record, or None to
        leave it) by compare-and-set, re-reading and retrying if another writer got there
        first. Returns the record written, or None when ``change`` declined."""
        for _ in range(_CAS_ATTEMPTS):
            current = await self.get(exam_id)
            if current is None:
                return None
            wanted = change(current)
            if wanted is None:
                return None
            # Validated again: ``change`` may have built it with model_copy, which checks nothing.
            new = AssignmentRecord.model_validate(
                {**wanted.model_dump(), "exam_id": exam_id, "revision": current.revision + 1, "updated_at": db_now()})
            fields: dict[str, Any] = new.to_document()
            doc = await compare_and_set(self.coll, self.claims, exam_id, {"revision": current.revision},
                                        {"$set": fields})
            if doc is not None:
                return AssignmentRecord.from_document(doc)
        raise CatalogError(f"assignment of exam {exam_id} kept changing; gave up after {_CAS_ATTEMPTS} attempts")

    async def of_terminal(self, terminal_id: str, *, state: AssignmentState = "assigned") -> list[AssignmentRecord]:
        """A terminal's assignments in ``state`` (equality filters only: pushed down by FerretDB)."""
        cursor = self.coll.find({"terminal_id": terminal_id, "state": state})
        return sorted([AssignmentRecord.from_document(doc) async for doc in cursor],
                      key=lambda a: (a.assigned_at or a.created_at, a.exam_id))

    async def waiting(self, *, limit: int = 1000) -> list[AssignmentRecord]:
        """Exams no terminal has, oldest first."""
        return await self.in_state("waiting", limit=limit)

    async def in_state(self, state: AssignmentState, *, limit: int = 1000) -> list[AssignmentRecord]:
        """Up to ``limit`` assignments in ``state``, oldest first."""
        cursor = self.coll.find({"state": state}).limit(limit)
        return sorted([AssignmentRecord.from_document(doc) async for doc in cursor],
                      key=lambda a: (a.created_at, a.exam_id))

    async def load(self, terminal_id: str, day: str) -> int:
        """Images (slides) given to the terminal on ``day`` (ISO date), done ones included."""
        total = 0
        async for doc in self.coll.find({"terminal_id": terminal_id, "assigned_day": day},
                                        {"slide_numbers": 1}):
            total += len(doc.get("slide_numbers") or ())
        return total
