"""Search: exams by patient ID, exam ID, body part and date; the signed-in reader's worklist."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from catalog.exam_search import ExamQuery, lr_slides_of, report_states, search_exams
from schemas.catalog import ExamRecord, ImageRecord
from viewer.access import Ctx, User, require_exam, scope_of

router = APIRouter(prefix="/api", tags=["search"])
IdParam = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class SlideOut(BaseModel):
    slide_number: int
    width: int | None
    height: int | None
    magnification: float | None


class ExamOut(BaseModel):
    exam_id: str
    patient_id: str
    body_part: str | None
    exam_date: datetime
    pathologist: str | None
    department: str | None
    report_status: str
    slides: list[SlideOut]


class ExamPage(BaseModel):
    exams: list[ExamOut]
    total: int


def _midnight(day: date | None, plus_days: int = 0) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), tzinfo=UTC) + timedelta(days=plus_days)


def exam_out(exam: ExamRecord, slides: list[ImageRecord], report_status: str) -> ExamOut:
    return ExamOut(exam_id=exam.exam_id, patient_id=exam.patient_id, body_part=exam.body_part,
                   exam_date=exam.exam_date, pathologist=exam.pathologist, department=exam.department,
                   report_status=report_status,
                   slides=[SlideOut(slide_number=s.slide_number, width=s.width, height=s.height,
                                    magnification=s.magnification) for s in slides])


@router.get("/exams", response_model=ExamPage, responses={401: {}})
async def find_exams(user: User, ctx: Ctx, patient_id: IdParam = None, exam_id: IdParam = None,
                     body_part: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                     date_from: date | None = None, date_to: date | None = None,
                     worklist: bool = False,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50,
                     offset: Annotated[int, Query(ge=0, le=100_000)] = 0) -> ExamPage:
    """``worklist``: only exams assigned to you or your department (whatever your role)."""
    scope = scope_of(user)
    if worklist:
        scope = type(scope)(pathologist=user.username, department=user.department)
    query = ExamQuery(patient_id=patient_id, exam_id=exam_id, body_part=body_part,
                      date_from=_midnight(date_from), date_to=_midnight(date_to, 1), limit=limit, offset=offset)
    exams, total = await search_exams(ctx.catalog, query, scope)
    ids = [exam.exam_id for exam in exams]
    slides, reports = await lr_slides_of(ctx.catalog, ids), await report_states(ctx.catalog, ids)
    return ExamPage(exams=[exam_out(e, slides[e.exam_id], reports[e.exam_id]) for e in exams], total=total)


@router.get("/exams/{exam_id}", response_model=ExamOut, responses={401: {}, 403: {}, 404: {}})
async def get_exam(exam_id: str, user: User, ctx: Ctx) -> ExamOut:
    exam = await ctx.exam(exam_id)
    require_exam(user, exam)
    slides, reports = await lr_slides_of(ctx.catalog, [exam_id]), await report_states(ctx.catalog, [exam_id])
    return exam_out(exam, slides[exam_id], reports[exam_id])
