"""The diagnosis report of an exam: free text and structured fields, saved with conflict
detection (a save names the revision it was based on; someone else's save in between is a 409)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from catalog.errors import ReportConflict
from schemas.catalog import ReportRecord
from viewer.access import Ctx, User, require_exam, require_role
from viewer.audit import audit
from viewer.http_errors import read_limited, validation_detail

router = APIRouter(prefix="/api/exams", tags=["reports"])
MAX_REPORT_BYTES = 256 * 1024


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    findings: str = Field("", max_length=65536)
    diagnosis: str = Field("", max_length=65536)
    body_part: str = Field("", max_length=64)
    status: Literal["draft", "final"] = "draft"
    expected_revision: int | None = Field(None, ge=0, description="revision read before editing; null creates")


class ReportOut(BaseModel):
    exam_id: str
    author: str
    findings: str
    diagnosis: str
    body_part: str
    status: str
    revision: int
    updated_at: datetime


def report_out(report: ReportRecord) -> ReportOut:
    return ReportOut(exam_id=report.exam_id, author=report.author, findings=report.findings,
                     diagnosis=report.diagnosis, body_part=report.body_part, status=report.status,
                     revision=report.revision, updated_at=report.updated_at)


@router.get("/{exam_id}/report", response_model=ReportOut, responses={401: {}, 403: {}, 404: {}})
async def get_report(exam_id: str, user: User, ctx: Ctx) -> ReportOut:
    require_role(user, "pathologist", "administrator")
    require_exam(user, await ctx.exam(exam_id))
    report = await ctx.catalog.get_report(exam_id)
    if report is None:
        raise HTTPException(404, f"exam {exam_id} has no report yet")
    return report_out(report)


@router.put("/{exam_id}/report", response_model=ReportOut,
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": ReportIn.model_json_schema()}}}},
            responses={401: {}, 403: {}, 404: {}, 409: {}, 413: {}, 422: {}})
async def save_report(exam_id: str, request: Request, user: User, ctx: Ctx) -> ReportOut:
    """Body read with a size limit before parsing: an oversize report is refused unread."""
    require_role(user, "pathologist")
    require_exam(user, await ctx.exam(exam_id))
    raw = await read_limited(request, MAX_REPORT_BYTES)
    try:
        body = ReportIn.model_validate_json(raw)
    except ValidationError as exc:
        raise HTTPException(422, validation_detail(exc)) from None
    current = await ctx.catalog.get_report(exam_id)
    if current is not None and current.status == "final" and body.expected_revision == current.revision \
            and body.status == "draft":
        raise HTTPException(409, "a final report cannot go back to draft; write an addendum instead")
    record = ReportRecord(exam_id=exam_id, author=user.username, findings=body.findings,
                          diagnosis=body.diagnosis, body_part=body.body_part, status=body.status)
    try:
        saved = await ctx.catalog.save_report(record, expected_revision=body.expected_revision)
    except ReportConflict:
        await audit(ctx.catalog, user.username, "report_save", "denied", exam_id=exam_id, reason="conflict")
        raise HTTPException(409, "someone else saved this report meanwhile; reload it and apply your "
                                 "changes again") from None
    await audit(ctx.catalog, user.username, "report_save", exam_id=exam_id, revision=saved.revision,
                status=saved.status)
    return report_out(saved)
