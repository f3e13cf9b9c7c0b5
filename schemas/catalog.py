"""Catalog records kept in MongoDB: patients, exams, images, reports, terminals, assignments, audit.

``to_document`` gives a BSON-ready dict (datetimes stay datetimes, enums become their
values, UUIDs strings, dates midnight-UTC datetimes); ``from_document`` accepts what
pymongo returns (naive UTC datetimes, an ``_id``) and makes datetimes tz-aware UTC.
Catalog datetimes are truncated to milliseconds, MongoDB's precision, so a record equals
itself after a round trip through the database.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal, Self
from uuid import UUID

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from schemas.common import (
    SENSITIVE_FIELDS,
    ImageState,
    ImageStateField,
    NonNegativeInt,
    ObjectRef,
    PatientIdentity,
    PositiveFloat,
    PositiveInt,
    ShortText,
    StorageTier,
    StorageTierField,
    Strict,
    UtcDatetime,
    utc_now,
)
from schemas.ids import ExamId, PatientId, Sha256Hex, SlideNumber, TerminalId, VisitId


def _to_millis(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


DbDatetime = Annotated[UtcDatetime, AfterValidator(_to_millis)]
Username = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z][a-z0-9._-]{1,63}$")]
Department = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]
"""Aware UTC datetime at MongoDB's millisecond precision."""


def db_now() -> datetime:
    return _to_millis(utc_now())


def _to_bson(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _to_bson(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_bson(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):  # BSON has no bare date
        return datetime.combine(value, time(), tzinfo=UTC)
    return value


def utc_from_bson(value: datetime) -> datetime:
    """pymongo returns BSON dates as naive UTC by default; this makes them comparable."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _from_bson(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _from_bson(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_bson(item) for item in value]
    if isinstance(value, datetime):
        return utc_from_bson(value)
    return value


class CatalogRecord(Strict):
    collection: ClassVar[str]
    key_fields: ClassVar[tuple[str, ...]]

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = _to_bson(self.model_dump(mode="python"))
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Self:
        fields = {key: value for key, value in document.items() if key != "_id"}
        return cls.model_validate(_from_bson(fields))

    def natural_key(self) -> dict[str, Any]:
        """Filter selecting this record (the collection has a unique index on these fields)."""
        key: dict[str, Any] = _to_bson({name: getattr(self, name) for name in self.key_fields})
        return key


class PatientRecord(CatalogRecord):
    collection: ClassVar[str] = "patients"
    key_fields: ClassVar[tuple[str, ...]] = ("patient_id",)

    patient_id: PatientId
    identity: PatientIdentity = Field(default_factory=PatientIdentity)
    status: Literal["admitted", "discharged", "unknown"] = "unknown"
    visit_id: VisitId | None = None
    ward: ShortText | None = None
    admitted_at: DbDatetime | None = None
    discharged_at: DbDatetime | None = None
    last_exam_at: DbDatetime | None = None
    created_at: DbDatetime = Field(default_factory=db_now)


class ExamRecord(CatalogRecord):
    collection: ClassVar[str] = "exams"
    key_fields: ClassVar[tuple[str, ...]] = ("exam_id",)

    exam_id: ExamId
    patient_id: PatientId
    body_part: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)] | None = None
    clinical_info: Annotated[str, StringConstraints(strict=True, max_length=16384)] | None = None
    exam_date: DbDatetime
    # Who reads it: a pathologist (username) and/or a department; the viewer shows an exam to
    # its pathologist and to the pathologists of its department (administrators see all).
    pathologist: Username | None = None
    department: Department | None = None
    created_at: DbDatetime = Field(default_factory=db_now)


class PendingMove(Strict):
    """A tier move in progress, written before the copy so a crash can be resumed:
    copy -> verify -> update catalog -> delete source (SPEC: no image lost)."""

    to_tier: StorageTierField | None  # None: deletion (HR dropped from the cache)
    target: ObjectRef | None = None
    # Where the image was when the move began: after the catalog update the record points
    # at the target, and a resumed move still has to delete this source.
    from_tier: StorageTierField | None = None
    source: ObjectRef | None = None
    step: Literal["copying", "copied", "verified", "catalog_updated", "deleting"]
    reason: Literal["discharge", "age", "readmission", "hr_evicted"]
    started_at: DbDatetime = Field(default_factory=db_now)


class ImageRecord(CatalogRecord):
    collection: ClassVar[str] = "images"
    key_fields: ClassVar[tuple[str, ...]] = ("exam_id", "slide_number", "state")

    exam_id: ExamId
    patient_id: PatientId
    slide_number: SlideNumber
    state: ImageStateField
    tier: StorageTierField
    object: ObjectRef
    mirror: ObjectRef | None = None  # permanent tiers are mirrored; the hr cache is not
    acquired_at: DbDatetime
    sha256: Sha256Hex | None = None  # None for an HR tile set (a key prefix)
    size_bytes: NonNegativeInt | None = None
    width: PositiveInt | None = None
    height: PositiveInt | None = None
    magnification: PositiveFloat | None = None
    mpp: PositiveFloat | None = None
    access_count: NonNegativeInt = 0
    last_accessed_at: DbDatetime | None = None
    pending_move: PendingMove | None = None
    # Bumped by every change of tier, object or move marker: the compare-and-set key of
    # tier moves (a top-level integer, which FerretDB can match without a collection scan).
    revision: NonNegativeInt = 0
    created_at: DbDatetime = Field(default_factory=db_now)

    # The tier sweep's equality key, derived (never stored on the model, so it cannot disagree
    # with state, tier and acquisition day): "<state>/<tier>/<UTC day>", written into every
    # document. FerretDB pushes down only top-level equality, so the sweep looks images up by
    # this key, one acquisition day at a time (catalog.repository.Catalog.sweep_pages).
    SWEEP_FIELD: ClassVar[str] = "sweep_bucket"

    @staticmethod
    def sweep_bucket_of(state: ImageState | int, tier: StorageTier, acquired_at: datetime) -> str:
        return f"{int(state)}/{tier.value}/{acquired_at.astimezone(UTC):%Y-%m-%d}"

    @property
    def sweep_bucket(self) -> str:
        return self.sweep_bucket_of(self.state, self.tier, self.acquired_at)

    def to_document(self) -> dict[str, Any]:
        return {**super().to_document(), self.SWEEP_FIELD: self.sweep_bucket}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Self:
        return super().from_document({k: v for k, v in document.items() if k != cls.SWEEP_FIELD})


class ReportRecord(CatalogRecord):
    collection: ClassVar[str] = "reports"
    key_fields: ClassVar[tuple[str, ...]] = ("exam_id",)

    exam_id: ExamId
    author: ShortText
    findings: Annotated[str, StringConstraints(strict=True, max_length=65536)] = ""
    diagnosis: Annotated[str, StringConstraints(strict=True, max_length=65536)] = ""
    body_part: Annotated[str, StringConstraints(strict=True, max_length=64)] = ""
    status: Literal["draft", "final"] = "draft"
    revision: NonNegativeInt = 0  # optimistic concurrency: update only if unchanged
    created_at: DbDatetime = Field(default_factory=db_now)
    updated_at: DbDatetime = Field(default_factory=db_now)


BodyPart = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
TaskClass = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z][a-z0-9_-]{0,63}$")]


class TerminalRecord(CatalogRecord):
    """A reading workstation that receives exams ahead of reading (SPEC 2, distribution).

    It signs in with its own key (only the SHA-256 digest is kept), never a user's token.
    ``online`` and ``last_heartbeat`` are kept by the terminal's heartbeats and by the
    distribution sweep, which marks a silent terminal offline after the policy's grace."""

    collection: ClassVar[str] = "terminals"
    key_fields: ClassVar[tuple[str, ...]] = ("terminal_id",)

    terminal_id: TerminalId
    task_classes: Annotated[list[TaskClass], Field(min_length=1, max_length=32)]
    capacity_per_day: PositiveInt  # images (slides) per day it is given at most, by policy
    owner_kind: Literal["user", "department"]
    owner: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]
    key_digest: Sha256Hex
    active: bool = True  # False: retired by an administrator, never assigned
    online: bool = False
    last_heartbeat: DbDatetime | None = None
    revision: NonNegativeInt = 0  # compare-and-set key of the online state
    created_at: DbDatetime = Field(default_factory=db_now)


AssignmentState = Literal["waiting", "assigned", "done"]


class AssignmentHop(Strict):
    """One earlier holder of an assignment (reassigned away)."""

    terminal_id: TerminalId
    until: DbDatetime
    reason: Literal["offline", "retired"]


class AssignmentRecord(CatalogRecord):
    """Which terminal reads an exam: one record per exam (``_id`` is the exam), so an exam
    is never assigned twice; every change is a compare-and-set on ``revision``.

    ``waiting``: no matching terminal was online; the sweep assigns it when one is.
    ``done``: the exam's report is final; terminals delete its local copy."""

    collection: ClassVar[str] = "assignments"
    key_fields: ClassVar[tuple[str, ...]] = ("exam_id",)

    exam_id: ExamId
    state: AssignmentState
    terminal_id: TerminalId | None = None
    task_class: TaskClass
    body_part: BodyPart | None = None
    rule: ShortText  # the policy rule that chose the task class
    slide_numbers: Annotated[list[SlideNumber], Field(min_length=1)]
    # The day (UTC, ISO) it was given to its terminal: a top-level string, so a terminal's
    # load of the day is an equality query (pushed down by FerretDB).
    assigned_day: Annotated[str, StringConstraints(strict=True, pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    assigned_at: DbDatetime | None = None
    over_capacity: bool = False  # every matching online terminal was full: given to the least loaded
    history: list[AssignmentHop] = Field(default_factory=list)
    revision: NonNegativeInt = 0
    created_at: DbDatetime = Field(default_factory=db_now)
    updated_at: DbDatetime = Field(default_factory=db_now)

    @model_validator(mode="after")
    def _terminal_when_assigned(self) -> Self:
        if (self.state == "waiting") != (self.terminal_id is None):
            raise ValueError("an assignment names a terminal unless it is waiting")
        return self


Role = Literal["pathologist", "technician", "administrator"]


class UserRecord(CatalogRecord):
    """A person who signs in to the viewer. The password is kept only as an argon2 hash."""

    collection: ClassVar[str] = "users"
    key_fields: ClassVar[tuple[str, ...]] = ("username",)

    username: Username
    role: Role
    department: Department | None = None
    password_hash: Annotated[str, StringConstraints(strict=True, min_length=20, max_length=512)]
    active: bool = True
    created_at: DbDatetime = Field(default_factory=db_now)


AuditValue = str | int | float | bool | None
_AUDIT_KEY = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z][a-z0-9_]{0,63}$")]


def _no_sensitive_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    bad = sorted(key for key in mapping if key in SENSITIVE_FIELDS)
    if bad:
        raise ValueError(f"audit entries must not carry identity data (keys {bad})")
    return mapping


class AuditEntry(CatalogRecord):
    """Who did what to which slide/exam/patient. IDs only: identity data is rejected."""

    collection: ClassVar[str] = "audit"
    key_fields: ClassVar[tuple[str, ...]] = ("at", "actor", "action")

    at: DbDatetime = Field(default_factory=db_now)
    actor: ShortText  # user, terminal or agent name
    action: ShortText  # e.g. "retrieve", "tier_move", "export", "report_update"
    target: dict[_AUDIT_KEY, str | int] = Field(default_factory=dict)
    outcome: Literal["ok", "denied", "not_found", "error"]
    detail: dict[_AUDIT_KEY, AuditValue] = Field(default_factory=dict)

    @field_validator("target", "detail")
    @classmethod
    def _ids_only(cls, mapping: dict[str, Any]) -> dict[str, Any]:
        return _no_sensitive_keys(mapping)


CATALOG_MODELS: tuple[type[CatalogRecord], ...] = (
    PatientRecord,
    ExamRecord,
    ImageRecord,
    ReportRecord,
    TerminalRecord,
    AssignmentRecord,
    UserRecord,
    AuditEntry,
)
