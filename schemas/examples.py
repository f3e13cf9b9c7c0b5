"""One valid instance of every event and catalog record, with identity data filled in.

Used by the schema and logging tests and as payload examples in docs; each call returns
fresh objects (new event IDs).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from schemas.catalog import (
    AssignmentRecord,
    AuditEntry,
    CatalogRecord,
    ExamRecord,
    ImageRecord,
    PatientRecord,
    PendingMove,
    ReportRecord,
    TerminalRecord,
    UserRecord,
)
from schemas.common import ImageState, ObjectRef, PatientIdentity, QcCheckName, QcFailureKind, StorageTier
from schemas.events import (
    ConsistencySummary,
    DeadLetter,
    DistributionAssigned,
    Event,
    PatientAdmitted,
    PatientDischarged,
    QcCheck,
    Region,
    SlideQcFailed,
    SlideQcPassed,
    SlideScanned,
    SlideStored,
    TierMoved,
    TileRef,
    UpscaleCancelled,
    UpscaleDone,
    UpscaleFailed,
    UpscaleRequested,
    UpscaleTileResult,
)
from schemas.topics import Priority

# A made-up national-ID-like patient ID and identity: the logging tests assert that none
# of these strings reach a log line.
PATIENT_ID = "19790412-7731"
EXAM_ID = "PX-2024-000123"
IDENTITY = PatientIdentity(
    name="Margarethe Example-Lindqvist",
    given_name="Margarethe",
    family_name="Example-Lindqvist",
    birth_date=date(1979, 4, 12),
    sex="F",
    national_id="197904127731",
    address="12 Sample Street, Testville",
    phone="+46 70 000 00 00",
)
SHA = "0123456789abcdef" * 4
WHEN = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
REQUEST_ID = UUID("6f1c8a52-3d4e-4b7a-9c0d-1e2f3a4b5c6d")


def _ref(bucket: str, key: str) -> ObjectRef:
    return ObjectRef(bucket=f"slidestream-{bucket}", key=key)


def example_events() -> list[Event]:
    checks = [
        QcCheck(name=QcCheckName.BLUR, score=0.12, threshold=0.3, passed=True, reason="sharp"),
        QcCheck(name=QcCheckName.BUBBLES, score=0.0, threshold=0.5, passed=True, reason="none found",
                region_count=0),
    ]
    tile = TileRef(level=12, col=3, row=4)
    return [
        SlideScanned(patient_id=PATIENT_ID, exam_id=EXAM_ID, slide_number=1,
                     ingest=_ref("ingest", f"{EXAM_ID}/1/scan.svs"), original_filename="scan.svs",
                     size_bytes=123_456, sha256=SHA, scanner_id="scanner-01", magnification=40.0,
                     mpp=0.25, body_part="stomach", acquired_at=WHEN),
        SlideQcPassed(patient_id=PATIENT_ID, exam_id=EXAM_ID, slide_number=1,
                      lr=_ref("ingest", f"{EXAM_ID}/1/lr.tif"), hr_candidate=_ref("ingest", f"{EXAM_ID}/1/scan.svs"),
                      width=8000, height=6000, magnification=5.0, mpp=2.0, sha256=SHA, size_bytes=4_000_000,
                      acquired_at=WHEN, checks=checks, corrected=True, body_part="stomach"),
        SlideQcFailed(patient_id=PATIENT_ID, exam_id=EXAM_ID, slide_number=2,
                      ingest=_ref("ingest", f"{EXAM_ID}/2/scan.svs"), kind=QcFailureKind.QUALITY,
                      reason="blur: score 0.71 above threshold 0.30",
                      checks=[QcCheck(name="blur", score=0.71, threshold=0.3, passed=False, reason="blurred")]),
        SlideStored(patient_id=PATIENT_ID, exam_id=EXAM_ID, slide_number=1, state=ImageState.LR,
                    tier=StorageTier.RECENT, object=_ref("recent", f"{EXAM_ID}/1/lr.tif"),
                    mirror=_ref("mirror", f"{EXAM_ID}/1/lr.tif"), sha256=SHA, size_bytes=4_000_000),
        UpscaleRequested(request_id=REQUEST_ID, exam_id=EXAM_ID, slide_number=1, scale=4,
                         priority=Priority.INTERACTIVE, tiles=[tile], requested_by="terminal-7",
                         deadline=WHEN + timedelta(seconds=2)),
        UpscaleRequested(exam_id=EXAM_ID, slide_number=1, scale=8, priority=Priority.BACKGROUND,
                         region=Region(x=0, y=0, width=2048, height=1024)),
        UpscaleDone(request_id=REQUEST_ID, exam_id=EXAM_ID, slide_number=1, scale=4,
                    results=[UpscaleTileResult(tile=tile, object=_ref("hr-cache", f"{EXAM_ID}/1/x4/12/3_4.jpeg"),
                                               cached=False, consistency_db=41.25)],
                    model="srgan-x4", timings_ms={"queue": 1.5, "read": 3.0, "compute": 40.25, "write": 2.0},
                    consistency=ConsistencySummary(tiles=1, min_db=41.25, mean_db=41.25, below=0, threshold_db=28.0)),
        UpscaleFailed(request_id=REQUEST_ID, exam_id=EXAM_ID, slide_number=1, reason="LR object missing",
                      tiles=[tile]),
        UpscaleCancelled(request_id=REQUEST_ID, exam_id=EXAM_ID, slide_number=1, priority=Priority.INTERACTIVE,
                         tiles=[tile]),
        PatientAdmitted(patient_id=PATIENT_ID, visit_id="V-88", admitted_at=WHEN, ward="surgery-3",
                        identity=IDENTITY),
        PatientDischarged(patient_id=PATIENT_ID, visit_id="V-88", discharged_at=WHEN + timedelta(days=3)),
        TierMoved(patient_id=PATIENT_ID, exam_id=EXAM_ID, slide_number=1, state=ImageState.LR,
                  from_tier=StorageTier.RECENT, to_tier=StorageTier.MID,
                  source=_ref("recent", f"{EXAM_ID}/1/lr.tif"), target=_ref("mid", f"{EXAM_ID}/1/lr.tif"),
                  reason="discharge", sha256=SHA),
        TierMoved(patient_id=PATIENT_ID, exam_id=EXAM_ID, slide_number=1, state=ImageState.HR,
                  from_tier=StorageTier.TEMPORARY, to_tier=None,
                  source=_ref("hr-cache", f"{EXAM_ID}/1/x4/"), target=None, reason="discharge"),
        DistributionAssigned(terminal_id="terminal-7", exam_id=EXAM_ID, slide_numbers=[1, 2],
                             priority=Priority.DISTRIBUTION, policy="gi", assignment_revision=1),
        # As core.dead_letters builds them: a digest and, for JSON, a redacted copy.
        DeadLetter(source_topic="slide.scanned", partition=3, offset=42, error="not JSON", key_ref="0f" * 8,
                   payload_size=30, payload_digest="3c" * 32),
        DeadLetter(source_topic="patient.admitted", partition=0, offset=7, key_ref="a1" * 8,
                   error="admitted_at: Field required", payload_size=191, payload_digest="5d" * 32,
                   redacted={"event_type": "patient.admitted", "patient_ref": "a1" * 8, "ward": "surgery-3",
                             "identity": "[redacted]", "[unknown field 5]": "[redacted]"}),
    ]


def example_records() -> list[CatalogRecord]:
    return [
        PatientRecord(patient_id=PATIENT_ID, identity=IDENTITY, status="admitted", visit_id="V-88",
                      ward="surgery-3", admitted_at=WHEN, last_exam_at=WHEN, created_at=WHEN),
        ExamRecord(exam_id=EXAM_ID, patient_id=PATIENT_ID, body_part="stomach",
                   clinical_info="suspected adenocarcinoma, biopsy", exam_date=WHEN, created_at=WHEN,
                   pathologist="dr.house", department="GI pathology"),
        ImageRecord(exam_id=EXAM_ID, patient_id=PATIENT_ID, slide_number=1, state=ImageState.LR,
                    tier=StorageTier.RECENT, object=_ref("recent", f"{EXAM_ID}/1/lr.tif"),
                    mirror=_ref("mirror", f"{EXAM_ID}/1/lr.tif"), acquired_at=WHEN, sha256=SHA,
                    size_bytes=4_000_000, width=8000, height=6000, magnification=5.0, mpp=2.0,
                    access_count=3, last_accessed_at=WHEN,
                    pending_move=PendingMove(to_tier=StorageTier.MID, target=_ref("mid", f"{EXAM_ID}/1/lr.tif"),
                                             step="copied", reason="discharge", started_at=WHEN),
                    created_at=WHEN),
        ImageRecord(exam_id=EXAM_ID, patient_id=PATIENT_ID, slide_number=1, state=ImageState.HR,
                    tier=StorageTier.TEMPORARY, object=_ref("hr-cache", f"{EXAM_ID}/1/x4/"),
                    acquired_at=WHEN, created_at=WHEN),
        ReportRecord(exam_id=EXAM_ID, author="dr-pathologist-2", findings="glandular structures",
                     diagnosis="adenocarcinoma", body_part="stomach", status="final", revision=2,
                     created_at=WHEN, updated_at=WHEN),
        TerminalRecord(terminal_id="terminal-7", task_classes=["gi", "general"], capacity_per_day=40,
                       owner_kind="department", owner="GI pathology", key_digest="0" * 64, online=True,
                       last_heartbeat=WHEN, created_at=WHEN),
        AssignmentRecord(exam_id=EXAM_ID, state="assigned", terminal_id="terminal-7", task_class="gi",
                         body_part="stomach", rule="gi", slide_numbers=[1, 2], assigned_day="2024-05-06",
                         assigned_at=WHEN, revision=1, created_at=WHEN, updated_at=WHEN),
        UserRecord(username="dr.house", role="pathologist", department="GI pathology",
                   password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", created_at=WHEN),
        AuditEntry(at=WHEN, actor="viewer:terminal-7", action="retrieve",
                   target={"patient_id": PATIENT_ID, "exam_id": EXAM_ID, "slide_number": 1},
                   outcome="ok", detail={"state": 1, "cached": True}),
    ]
