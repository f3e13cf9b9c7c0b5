"""Creating users and assigning exams from the command line (the first administrator, the demo)."""

from __future__ import annotations

import asyncio

from catalog.db import connect, database
from catalog.exam_search import assign_exam
from catalog.indexes import ensure_indexes
from catalog.repository import Catalog
from catalog.users import Users
from core.settings import Settings
from schemas.catalog import ExamRecord, UserRecord
from viewer.audit import audit
from viewer.passwords import hash_password


async def add_user(settings: Settings, username: str, role: str, password: str, *,
                   department: str | None = None, actor: str = "cli") -> UserRecord:
    client = connect(settings.mongo)
    try:
        db = database(client, settings.mongo)
        await ensure_indexes(db)
        password_hash = await asyncio.to_thread(hash_password, password)
        user = await Users(db).add(UserRecord(username=username, role=role,  # type: ignore[arg-type]  # validated by the model
                                              department=department, password_hash=password_hash))
        await audit(Catalog(db), actor, "user_add", created=username, role=role)
        return user
    finally:
        await client.close()


async def assign(settings: Settings, exam_id: str, *, pathologist: str | None, department: str | None,
                 actor: str = "cli") -> ExamRecord:
    client = connect(settings.mongo)
    try:
        catalog = Catalog(database(client, settings.mongo))
        exam = await assign_exam(catalog, exam_id, pathologist=pathologist, department=department)
        await audit(catalog, actor, "exam_assign", exam_id=exam_id)
        return exam
    finally:
        await client.close()
