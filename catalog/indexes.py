"""Indexes of the catalog: the unique keys of SPEC 2 and one index for every query the
services make (the query each serves is named next to it).

``ensure_indexes`` is idempotent (createIndexes with the same spec is a no-op) and uses only
plain, compound and unique indexes, which MongoDB and FerretDB both support (FerretDB has
no partial or TTL indexes). Documents carry their natural key as ``_id`` (see
``catalog.repository.natural_id``), so point lookups use the primary index.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo import ASCENDING, DESCENDING

from catalog.repository import Catalog

Keys = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class IndexSpec:
    collection: str
    name: str
    keys: Keys
    unique: bool = False
    serves: str = ""


INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec("patients", "patient_id_unique", (("patient_id", ASCENDING),), True,
              "one patient per ID (point lookups use the natural _id)"),
    IndexSpec("exams", "exam_id_unique", (("exam_id", ASCENDING),), True,
              "one exam per ID (point lookups use the natural _id)"),
    IndexSpec("exams", "patient_exams", (("patient_id", ASCENDING), ("exam_date", DESCENDING)), False,
              "a patient's exams, newest first (retrieve, export, discharge)"),
    IndexSpec("images", "slide_state_unique",
              (("exam_id", ASCENDING), ("slide_number", ASCENDING), ("state", ASCENDING)), True,
              "one image per exam + slide + state; an exam's images (point lookups use _id)"),
    IndexSpec("images", "patient_images",
              (("patient_id", ASCENDING), ("state", ASCENDING), ("tier", ASCENDING)), False,
              "a patient's images by state and tier (discharge, admission, retrieve, export)"),
    IndexSpec("images", "tier_age",
              (("state", ASCENDING), ("tier", ASCENDING), ("acquired_at", ASCENDING)), False,
              "images of a tier by age (Catalog.images_in_tier); usage per tier"),
    IndexSpec("images", "tier_last_access",
              (("state", ASCENDING), ("tier", ASCENDING), ("last_accessed_at", DESCENDING)), False,
              "recently read slides in long storage (usage-frequency promotion)"),
    IndexSpec("images", "sweep_bucket", (("sweep_bucket", ASCENDING),), False,
              "tier sweep candidates: one state, tier and acquisition day (Catalog.sweep_pages)"),
    IndexSpec("sweep_days", "sweep_day_group", (("group", ASCENDING), ("day", ASCENDING)), False,
              "the acquisition days in use per state and tier, oldest first (tier sweep)"),
    IndexSpec("images", "pending_moves", (("pending_move.started_at", ASCENDING),), False,
              "moves interrupted by a crash, oldest first"),
    IndexSpec("exams", "pathologist_exams", (("pathologist", ASCENDING), ("exam_date", DESCENDING)), False,
              "a pathologist's worklist, newest first (viewer)"),
    IndexSpec("exams", "department_exams", (("department", ASCENDING), ("exam_date", DESCENDING)), False,
              "a department's exams, newest first (viewer)"),
    IndexSpec("exams", "exam_dates", (("exam_date", DESCENDING),), False,
              "exam search by date and body part (viewer)"),
    IndexSpec("users", "username_unique", (("username", ASCENDING),), True,
              "one user per name (sign-in uses the natural _id)"),
    IndexSpec("reports", "report_exam_unique", (("exam_id", ASCENDING),), True,
              "one report per exam"),
    IndexSpec("terminals", "terminal_id_unique", (("terminal_id", ASCENDING),), True,
              "one record per terminal"),
    IndexSpec("assignments", "assignment_exam_unique", (("exam_id", ASCENDING),), True,
              "one assignment per exam: an exam is never assigned twice"),
    IndexSpec("assignments", "terminal_assignments", (("terminal_id", ASCENDING), ("state", ASCENDING)), False,
              "a terminal's open assignments (terminal API, offline reassignment)"),
    IndexSpec("assignments", "terminal_day_load", (("terminal_id", ASCENDING), ("assigned_day", ASCENDING)), False,
              "a terminal's load of the day (distribution policy)"),
    IndexSpec("assignments", "assignment_state", (("state", ASCENDING),), False,
              "exams waiting for a terminal"),
    IndexSpec("audit", "audit_time", (("at", DESCENDING),), False, "latest audit entries"),
    IndexSpec("audit", "audit_exam", (("target.exam_id", ASCENDING), ("at", DESCENDING)), False,
              "an exam's access history"),
)


# Fields the catalog filters by equality, with few documents per value, per collection (every
# collection's ``_id`` too). FerretDB v1's PostgreSQL backend pushes an equality filter down as
# ``(_jsonb -> 'field') @> value``, which its own btree indexes above cannot serve; on that
# backend infra adds a GIN index (jsonb_path_ops) on each of these expressions
# (``infra.postgres_server.push_down_indexes``). MongoDB serves them from the indexes above.
EQUALITY_FIELDS: dict[str, tuple[str, ...]] = {
    "patients": ("_id",),
    "exams": ("_id", "patient_id", "pathologist", "department"),
    "images": ("_id", "patient_id", "exam_id", "sweep_bucket"),
    "sweep_days": ("_id", "group"),
    "migrations": ("_id",),
    "reports": ("_id",),
    "users": ("_id",),
    "terminals": ("_id",),
    "assignments": ("_id", "terminal_id"),
    "cas_claims": ("_id",),
    "leases": ("_id",),
}


async def ensure_indexes(db) -> list[str]:
    """Create every index in ``INDEXES`` on ``db`` (a pymongo AsyncDatabase), then run the
    catalog's one-time data migrations (the tier sweep's key on images written before it:
    ``Catalog.backfill_sweep_buckets``, one lookup once done); returns the index names."""
    names = []
    for spec in INDEXES:
        names.append(await db[spec.collection].create_index(list(spec.keys), name=spec.name,
                                                            unique=spec.unique))
    await Catalog(db).backfill_sweep_buckets()
    return names
