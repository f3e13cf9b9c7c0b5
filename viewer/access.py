"""Who may do what in the viewer: bearer-token authentication and the role rules.

* administrator: every exam, user administration, assignments, the audit log; reads reports;
* pathologist: the exams assigned to them or to their department; writes their reports;
* technician: every exam's slides (they scan and check them), no reports.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from catalog.exam_search import ExamScope
from core.tokens import InvalidToken, Principal
from schemas.catalog import ExamRecord
from viewer.context import ViewerContext

BEARER = "bearer"


async def context(request: Request) -> ViewerContext:
    # async on purpose: FastAPI runs a plain-def dependency in a worker thread, a thread hop
    # that cost a fifth of the viewer's CPU per tile request.
    ctx: ViewerContext = request.app.state.viewer
    return ctx


Ctx = Annotated[ViewerContext, Depends(context)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def current_user(request: Request, ctx: Ctx) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != BEARER or not token.strip():
        raise _unauthorized("sign in first: missing bearer token")
    try:
        principal = ctx.signer.verify(token.strip())
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from None
    user = await ctx.active_user(principal.username)
    if user is None:
        raise _unauthorized("this account is unknown or disabled")
    # Role and department come from the catalog, so a change applies without a new token.
    return Principal(user.username, user.role, user.department)


User = Annotated[Principal, Depends(current_user)]


def scope_of(user: Principal) -> ExamScope:
    if user.role in ("administrator", "technician"):
        return ExamScope(everything=True)
    return ExamScope(pathologist=user.username, department=user.department)


def require_exam(user: Principal, exam: ExamRecord) -> None:
    if not scope_of(user).allows(exam):
        raise HTTPException(403, f"exam {exam.exam_id} is not assigned to you or your department")


def require_role(user: Principal, *roles: str) -> None:
    if user.role not in roles:
        raise HTTPException(403, f"this needs the role {' or '.join(roles)}; you are {user.role}")
