"""Audit entries for what a reader does: sign-in, slide opened, tile session, report saved.
IDs only (``schemas.catalog.AuditEntry`` refuses identity data)."""

from __future__ import annotations

from typing import Literal

from catalog.repository import Catalog
from schemas.catalog import AuditEntry, AuditValue

Outcome = Literal["ok", "denied", "not_found", "error"]


async def audit(catalog: Catalog, actor: str, action: str, outcome: Outcome = "ok", *,
                exam_id: str | None = None, slide_number: int | None = None, **detail: AuditValue) -> None:
    target: dict[str, str | int] = {}
    if exam_id is not None:
        target["exam_id"] = exam_id
    if slide_number is not None:
        target["slide_number"] = slide_number
    await catalog.audit(AuditEntry(actor=actor, action=action, outcome=outcome, target=target, detail=detail))
