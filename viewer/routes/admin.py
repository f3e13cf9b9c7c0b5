"""Administration: users and roles, who reads which exam, the audit log."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from catalog.exam_search import assign_exam
from schemas.catalog import Department, Role, Username, UserRecord
from viewer.access import Ctx, User, require_role
from viewer.audit import audit
from viewer.passwords import hash_password
from viewer.routes.exams import ExamOut, exam_out

router = APIRouter(prefix="/api", tags=["administration"])


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Username
    role: Role
    department: Department | None = None
    password: str = Field(min_length=12, max_length=1024)


class UserOut(BaseModel):
    username: str
    role: str
    department: str | None
    active: bool


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pathologist: Username | None = None
    department: Department | None = None


class AuditOut(BaseModel):
    at: datetime
    actor: str
    action: str
    outcome: str
    target: dict[str, str | int]


@router.post("/users", response_model=UserOut, status_code=201, responses={401: {}, 403: {}, 409: {}, 422: {}})
async def add_user(body: NewUser, user: User, ctx: Ctx) -> UserOut:
    require_role(user, "administrator")
    password_hash = await asyncio.to_thread(hash_password, body.password)
    record = await ctx.users.add(UserRecord(username=body.username, role=body.role, department=body.department,
                                            password_hash=password_hash))
    await audit(ctx.catalog, user.username, "user_add", created=record.username, role=record.role)
    return UserOut(username=record.username, role=record.role, department=record.department, active=record.active)


@router.get("/users", response_model=list[UserOut], responses={401: {}, 403: {}})
async def list_users(user: User, ctx: Ctx) -> list[UserOut]:
    require_role(user, "administrator")
    return [UserOut(username=u.username, role=u.role, department=u.department, active=u.active)
            for u in await ctx.users.all()]


@router.put("/exams/{exam_id}/assignment", response_model=ExamOut, responses={401: {}, 403: {}, 404: {}, 422: {}})
async def assign(exam_id: str, body: Assignment, user: User, ctx: Ctx) -> ExamOut:
    require_role(user, "administrator")
    if body.pathologist is not None:
        reader = await ctx.users.get(body.pathologist)
        if reader is None or reader.role != "pathologist":
            raise HTTPException(422, f"{body.pathologist} is not a pathologist's user name")
    exam = await assign_exam(ctx.catalog, exam_id, pathologist=body.pathologist, department=body.department)
    ctx.forget_exam(exam_id)
    await audit(ctx.catalog, user.username, "exam_assign", exam_id=exam_id)
    return exam_out(exam, [], "none")


@router.get("/audit", response_model=list[AuditOut], responses={401: {}, 403: {}})
async def audit_log(user: User, ctx: Ctx,
                    exam_id: Annotated[str, Query(min_length=1, max_length=64)],
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditOut]:
    require_role(user, "administrator")
    entries = await ctx.catalog.exam_history(exam_id, limit=limit)
    return [AuditOut(at=e.at, actor=e.actor, action=e.action, outcome=e.outcome, target=e.target) for e in entries]
