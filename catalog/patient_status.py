"""Patient status from HIS events, independent of the order the events arrive in.

Kafka delivers ``patient.admitted`` and ``patient.discharged`` on different topics, so a
discharge may be processed before the admission it closes, and either may be delivered
twice. The catalog therefore keeps the latest admission and discharge times and derives the
status from them: applying the same event twice, or two events in either order, gives the
same record.
"""

from __future__ import annotations

from datetime import datetime

from catalog.tiering import PatientStatus
from schemas.catalog import PatientRecord
from schemas.common import PatientIdentity


def status_from(admitted_at: datetime | None, discharged_at: datetime | None) -> PatientStatus:
    if admitted_at is not None and (discharged_at is None or admitted_at > discharged_at):
        return "admitted"
    if discharged_at is not None:
        return "discharged"
    return "unknown"


def _later(current: datetime | None, candidate: datetime) -> bool:
    return current is None or candidate > current


def apply_admission(record: PatientRecord, at: datetime, *, visit_id: str | None = None,
                    ward: str | None = None, identity: PatientIdentity | None = None) -> PatientRecord:
    """``record`` after an admission at ``at``; visit, ward and identity come from the newest
    admission only."""
    # Round-trip through the model so ``at`` gets the catalog's millisecond precision.
    at = PatientRecord(patient_id=record.patient_id, admitted_at=at).admitted_at
    assert at is not None
    if not _later(record.admitted_at, at):
        return record
    changes: dict[str, object] = {"admitted_at": at, "ward": ward}
    if visit_id is not None:
        changes["visit_id"] = visit_id
    if identity is not None:
        changes["identity"] = identity
    changes["status"] = status_from(at, record.discharged_at)
    return record.model_copy(update=changes)


def apply_discharge(record: PatientRecord, at: datetime, *, visit_id: str | None = None) -> PatientRecord:
    at = PatientRecord(patient_id=record.patient_id, discharged_at=at).discharged_at
    assert at is not None
    if not _later(record.discharged_at, at):
        return record
    changes: dict[str, object] = {"discharged_at": at, "status": status_from(record.admitted_at, at)}
    if visit_id is not None and changes["status"] == "discharged":
        changes["visit_id"] = visit_id
    return record.model_copy(update=changes)


def apply_exam(record: PatientRecord, exam_at: datetime) -> PatientRecord:
    """Keep the patient's most recent exam time (input of the usage-frequency rule)."""
    exam_at = PatientRecord(patient_id=record.patient_id, last_exam_at=exam_at).last_exam_at
    assert exam_at is not None
    if not _later(record.last_exam_at, exam_at):
        return record
    return record.model_copy(update={"last_exam_at": exam_at})
