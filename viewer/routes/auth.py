"""Sign-in: a user name and password for a short-lived bearer token; renewal; who am I."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from core.tokens import Principal
from viewer.access import Ctx, User
from viewer.audit import audit
from viewer.passwords import verify_password

router = APIRouter(prefix="/api", tags=["sign-in"])
_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    username: str
    role: str
    department: str | None


class TokenOut(BaseModel):
    token: str
    expires_at: datetime
    user: UserOut


def _issue(ctx: Ctx, user: Principal) -> TokenOut:
    token, expires = ctx.signer.issue(user)
    return TokenOut(token=token, expires_at=expires,
                    user=UserOut(username=user.username, role=user.role, department=user.department))


@router.post("/auth/login", response_model=TokenOut, responses={401: {}, 429: {}})
async def login(body: LoginIn, request: Request, ctx: Ctx) -> TokenOut:
    name = body.username.strip().lower()
    keys = (f"user:{name}", f"addr:{request.client.host if request.client else '-'}")
    wait = ctx.guard.retry_after(*keys)
    if wait > 0:
        raise HTTPException(429, "too many failed sign-ins; try again later",
                            headers={"Retry-After": str(math.ceil(wait))})
    user = await ctx.users.get(name) if _NAME.match(name) else None
    stored = user.password_hash if user is not None and user.active else None
    if not await asyncio.to_thread(verify_password, stored, body.password):
        ctx.guard.failed(*keys)
        await audit(ctx.catalog, name if _NAME.match(name) else "unknown", "sign_in", "denied")
        raise HTTPException(401, "wrong user name or password", headers={"WWW-Authenticate": "Bearer"})
    assert user is not None
    ctx.guard.succeeded(keys[0])  # the address keeps its count: one good account must not reset it
    await audit(ctx.catalog, user.username, "sign_in")
    return _issue(ctx, Principal(user.username, user.role, user.department))


@router.post("/auth/refresh", response_model=TokenOut, responses={401: {}})
async def refresh(user: User, ctx: Ctx) -> TokenOut:
    return _issue(ctx, user)


@router.get("/me", response_model=UserOut, responses={401: {}})
async def me(user: User) -> UserOut:
    return UserOut(username=user.username, role=user.role, department=user.department)
