"""Finding exams for a reader: search by patient, exam, body part and date, limited to what
the reader may see (their own and their department's exams, or everything), and the slides
and report state that a result list shows next to each exam."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING

from catalog.claims import compare_and_set
from catalog.errors import UnknownExam
from catalog.repository import Catalog
from schemas.catalog import ExamRecord, ImageRecord
from schemas.common import ImageState


@dataclass(frozen=True)
class ExamScope:
    """Which exams a reader may see: all, or those assigned to ``pathologist`` or ``department``."""

    everything: bool = False
    pathologist: str | None = None
    department: str | None = None

    def allows(self, exam: ExamRecord) -> bool:
        if self.everything:
            return True
        return ((self.pathologist is not None and exam.pathologist == self.pathologist)
                or (self.department is not None and exam.department == self.department))

    def filter(self) -> dict[str, Any]:
        if self.everything:
            return {}
        options: list[dict[str, Any]] = []
        if self.pathologist is not None:
            options.append({"pathologist": self.pathologist})
        if self.department is not None:
            options.append({"department": self.department})
        if len(options) == 1:  # a plain equality: FerretDB pushes it down to its backend, $or it does not
            return options[0]
        # Nobody named: a filter that matches nothing (an empty $or is invalid in MongoDB).
        return {"$or": options} if options else {"_id": {"$in": []}}


@dataclass(frozen=True)
class ExamQuery:
    patient_id: str | None = None
    exam_id: str | None = None
    body_part: str | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None  # exclusive
    limit: int = 50
    offset: int = 0

    def filter(self) -> dict[str, Any]:
        flt: dict[str, Any] = {}
        if self.patient_id is not None:
            flt["patient_id"] = self.patient_id
        if self.exam_id is not None:
            flt["_id"] = self.exam_id
        if self.body_part is not None:
            flt["body_part"] = self.body_part
        window: dict[str, datetime] = {}
        if self.date_from is not None:
            window["$gte"] = self.date_from
        if self.date_to is not None:
            window["$lt"] = self.date_to
        if window:
            flt["exam_date"] = window
        return flt


def _all_of(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    """One filter that all ``clauses`` must match: a flat document when their fields differ
    (FerretDB pushes top-level equalities down to its backend, an ``$and`` it does not)."""
    if not clauses:
        return {}
    keys = [key for clause in clauses for key in clause]
    if len(set(keys)) == len(keys):
        return {key: value for clause in clauses for key, value in clause.items()}
    return {"$and": clauses}


async def search_exams(catalog: Catalog, query: ExamQuery, scope: ExamScope) -> tuple[list[ExamRecord], int]:
    """One page of matching exams, newest first, and how many match in all."""
    flt = _all_of([part for part in (query.filter(), scope.filter()) if part])
    cursor = (catalog.exams.find(flt).sort([("exam_date", DESCENDING), ("_id", ASCENDING)])
              .skip(query.offset).limit(query.limit))
    exams = [ExamRecord.from_document(doc) async for doc in cursor]
    total = await catalog.exams.count_documents(flt)
    return exams, total


async def lr_slides_of(catalog: Catalog, exam_ids: list[str]) -> dict[str, list[ImageRecord]]:
    """The stored LR slides of each exam, by slide number."""
    found: dict[str, list[ImageRecord]] = {exam_id: [] for exam_id in exam_ids}
    if not catalog.point_queries:  # one query (one scan on FerretDB's SQLite backend)
        if found:
            cursor = catalog.images.find({"exam_id": {"$in": list(found)}, "state": int(ImageState.LR)})
            async for doc in cursor.sort([("exam_id", ASCENDING), ("slide_number", ASCENDING)]):
                record = ImageRecord.from_document(doc)
                found[record.exam_id].append(record)
        return found

    # One equality query per exam, sent together: FerretDB pushes ``exam_id`` equality down to
    # an index on its PostgreSQL backend, an ``$in`` it evaluates over the whole collection.
    async def of_exam(exam_id: str) -> None:
        cursor = catalog.images.find({"exam_id": exam_id, "state": int(ImageState.LR)})
        found[exam_id] = [ImageRecord.from_document(doc)
                          async for doc in cursor.sort("slide_number", ASCENDING)]

    await asyncio.gather(*(of_exam(exam_id) for exam_id in found))
    return found


async def report_states(catalog: Catalog, exam_ids: list[str]) -> dict[str, str]:
    """``none``, ``draft`` or ``final`` for each exam."""
    states = dict.fromkeys(exam_ids, "none")
    if exam_ids:
        async for doc in catalog.reports.find({"_id": {"$in": exam_ids}}, {"status": 1}):
            states[str(doc["_id"])] = str(doc.get("status", "draft"))
    return states


async def assign_exam(catalog: Catalog, exam_id: str, *, pathologist: str | None,
                      department: str | None) -> ExamRecord:
    """Set who reads an exam; compare-and-set on the current assignment, retried on a race."""
    for _ in range(20):
        exam = await catalog.get_exam(exam_id)
        if exam is None:
            raise UnknownExam(exam_id)
        doc = await compare_and_set(catalog.exams, catalog.claims, exam_id,
                                    {"pathologist": exam.pathologist, "department": exam.department},
                                    {"$set": {"pathologist": pathologist, "department": department}})
        if doc is not None:
            return ExamRecord.from_document(doc)
    raise RuntimeError(f"assignment of exam {exam_id} kept changing under concurrent updates")
