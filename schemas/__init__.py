"""Event and catalog record shapes: the only place they are defined.

Import from the submodules (``schemas.events``, ``schemas.catalog``, ``schemas.registry``)
or from here.
"""

from schemas.catalog import (
    CATALOG_MODELS,
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
from schemas.common import (
    IDENTITY_FIELDS,
    SENSITIVE_FIELDS,
    ImageState,
    ObjectRef,
    PatientIdentity,
    QcCheckName,
    QcFailureKind,
    StorageTier,
)
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
from schemas.ids import ExamId, PatientId, RequestId, SlideNumber, TerminalId, is_valid_id
from schemas.registry import EVENT_MODELS, EventValidationError, parse_any_event, parse_event
from schemas.topics import Priority, Topic

__all__ = [name for name in dir() if not name.startswith("_")]
