"""Every event carried on Kafka. One model per topic; ``event_type`` is the topic name and
the discriminator. Bump ``schema_version`` (and keep a reader for the old one) when a
shape changes incompatibly."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from uuid import uuid4

from pydantic import BeforeValidator, Field, JsonValue, StringConstraints, model_validator

from schemas.common import (
    FiniteFloat,
    ImageStateField,
    NonEmptyStr,
    NonNegativeInt,
    ObjectRef,
    PatientIdentity,
    PositiveFloat,
    PositiveInt,
    PriorityField,
    QcCheckNameField,
    QcFailureKindField,
    SchemaVersion,
    ShortText,
    StorageTierField,
    Strict,
    UtcDatetime,
    _not_bool,
    utc_now,
)
from schemas.ids import (
    ExamId,
    PatientId,
    RequestId,
    ScannerId,
    Sha256Hex,
    SlideNumber,
    TerminalId,
    Uuid,
    VisitId,
)
from schemas.topics import Topic

Scale = Literal[2, 4, 8]
Reason = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=4096)]
BodyPart = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]


def _truncate_reason(value: object) -> object:
    # A dead letter must never be refused for having too long a reason: that would lose it.
    if isinstance(value, str) and len(value) > 4096:
        return value[:4093] + "..."
    return value


Filename = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=255)]


class Event(Strict):
    """Envelope fields shared by every event."""

    topic: ClassVar[Topic]

    schema_version: SchemaVersion = 1
    # Consumers de-duplicate on event_id (Kafka delivers at least once).
    event_id: Uuid = Field(default_factory=uuid4)
    occurred_at: UtcDatetime = Field(default_factory=utc_now)

    def kafka_key(self) -> str | None:
        """Partition key: events about one exam (or patient) stay in order on one partition."""
        for name in ("exam_id", "patient_id"):
            value = getattr(self, name, None)
            if isinstance(value, str):
                return value
        return None

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


class _SlideIds(Strict):
    patient_id: PatientId
    exam_id: ExamId
    slide_number: SlideNumber


# --- imaging and QC -----------------------------------------------------------------------


class SlideScanned(Event, _SlideIds):
    topic: ClassVar[Topic] = Topic.SLIDE_SCANNED
    event_type: Literal["slide.scanned"] = "slide.scanned"

    ingest: ObjectRef
    original_filename: Filename
    size_bytes: PositiveInt
    sha256: Sha256Hex
    scanner_id: ScannerId | None = None
    magnification: PositiveFloat | None = None  # objective power of the scanned file
    mpp: PositiveFloat | None = None  # microns per pixel at level 0
    body_part: BodyPart | None = None
    acquired_at: UtcDatetime


class QcCheck(Strict):
    name: QcCheckNameField
    score: FiniteFloat
    threshold: FiniteFloat
    passed: bool
    reason: Reason
    region_count: NonNegativeInt | None = None  # bubbles / folds found


class SlideQcPassed(Event, _SlideIds):
    topic: ClassVar[Topic] = Topic.SLIDE_QC_PASSED
    event_type: Literal["slide.qc_passed"] = "slide.qc_passed"

    lr: ObjectRef  # pyramidal TIFF in the ingest bucket
    hr_candidate: ObjectRef | None = None  # original HR scan, kept as hr-cache candidate
    # The scanner's upload it came from (ingest bucket), deleted once the slide is saved (and
    # cut, when it is the HR candidate); absent in events written before this field.
    scan: ObjectRef | None = None
    width: PositiveInt
    height: PositiveInt
    magnification: PositiveFloat
    mpp: PositiveFloat | None = None
    sha256: Sha256Hex  # of the LR object
    size_bytes: PositiveInt
    acquired_at: UtcDatetime
    checks: list[QcCheck]
    corrected: bool = False  # colour normalisation toward the reference applied
    body_part: BodyPart | None = None


class SlideQcFailed(Event):
    topic: ClassVar[Topic] = Topic.SLIDE_QC_FAILED
    event_type: Literal["slide.qc_failed"] = "slide.qc_failed"

    # Optional: the IDs themselves may be what is wrong (kind=invalid_ids).
    patient_id: PatientId | None = None
    exam_id: ExamId | None = None
    slide_number: SlideNumber | None = None
    ingest: ObjectRef
    kind: QcFailureKindField
    reason: Reason
    checks: list[QcCheck] = Field(default_factory=list)


class SlideStored(Event, _SlideIds):
    topic: ClassVar[Topic] = Topic.SLIDE_STORED
    event_type: Literal["slide.stored"] = "slide.stored"

    state: ImageStateField
    tier: StorageTierField
    object: ObjectRef
    mirror: ObjectRef
    sha256: Sha256Hex
    size_bytes: PositiveInt


# --- super-resolution -------------------------------------------------------------------


class TileRef(Strict):
    """A Deep Zoom tile of the output (HR) pyramid."""

    level: NonNegativeInt
    col: NonNegativeInt
    row: NonNegativeInt


class Region(Strict):
    """A rectangle in level-0 output pixels."""

    x: NonNegativeInt
    y: NonNegativeInt
    width: PositiveInt
    height: PositiveInt


class UpscaleRequested(Event):
    topic: ClassVar[Topic] = Topic.UPSCALE_REQUESTED
    event_type: Literal["upscale.requested"] = "upscale.requested"

    request_id: RequestId = Field(default_factory=uuid4)
    exam_id: ExamId
    slide_number: SlideNumber
    scale: Scale
    priority: PriorityField
    tiles: Annotated[list[TileRef], Field(min_length=1)] | None = None
    region: Region | None = None
    requested_by: TerminalId | None = None
    reply_topic: Literal["upscale.done"] = "upscale.done"
    deadline: UtcDatetime | None = None

    @model_validator(mode="after")
    def _tiles_xor_region(self) -> UpscaleRequested:
        if (self.tiles is None) == (self.region is None):
            raise ValueError("give exactly one of 'tiles' (non-empty list) or 'region'")
        return self


# PSNR in dB of a computed tile box-downsampled to the stored magnification against the
# stored LR it was computed from (compute.consistency; capped at 99 for identical pixels).
ConsistencyDb = Annotated[float, Field(strict=True, ge=0, le=99, allow_inf_nan=False)]


class UpscaleTileResult(Strict):
    tile: TileRef
    object: ObjectRef
    cached: bool  # already in the hr-cache, not recomputed
    # None: not computed by this answer (cached) or no computed tile (scanned).
    consistency_db: ConsistencyDb | None = None


class ConsistencySummary(Strict):
    """How the tiles an answer computed agree with the stored LR (the per-tile values above)."""

    tiles: PositiveInt  # computed tiles measured
    min_db: ConsistencyDb
    mean_db: ConsistencyDb  # mean of the per-tile dB values
    below: NonNegativeInt  # tiles under threshold_db: the reconstruction disagrees with the LR
    threshold_db: ConsistencyDb

    @classmethod
    def of(cls, values_db: list[float], threshold_db: float) -> ConsistencySummary | None:
        if not values_db:
            return None
        return cls(tiles=len(values_db), min_db=min(values_db), mean_db=round(sum(values_db) / len(values_db), 2),
                   below=sum(v < threshold_db for v in values_db), threshold_db=threshold_db)

    @classmethod
    def merged(cls, parts: list[ConsistencySummary | None]) -> ConsistencySummary | None:
        """One summary for answers of several batches (the last one's threshold)."""
        known = [p for p in parts if p is not None]
        if not known:
            return None
        tiles = sum(p.tiles for p in known)
        return cls(tiles=tiles, min_db=min(p.min_db for p in known),
                   mean_db=round(sum(p.mean_db * p.tiles for p in known) / tiles, 2),
                   below=sum(p.below for p in known), threshold_db=known[-1].threshold_db)


class UpscaleDone(Event):
    topic: ClassVar[Topic] = Topic.UPSCALE_DONE
    event_type: Literal["upscale.done"] = "upscale.done"

    request_id: RequestId
    exam_id: ExamId
    slide_number: SlideNumber
    scale: Scale
    results: list[UpscaleTileResult]
    model: ShortText
    # Keys: queue, read, compute, write (milliseconds).
    timings_ms: dict[str, Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict
    )
    # Answers come per tile batch, so one request may get several events: tiles of the
    # request still unanswered (neither done nor failed) after this one; 0 = finished.
    remaining: NonNegativeInt = 0
    # Over this answer's computed tiles; None when it computed none (all cached or scanned).
    consistency: ConsistencySummary | None = None


class UpscaleFailed(Event):
    topic: ClassVar[Topic] = Topic.UPSCALE_FAILED
    event_type: Literal["upscale.failed"] = "upscale.failed"

    request_id: RequestId
    exam_id: ExamId
    slide_number: SlideNumber
    reason: Reason
    tiles: list[TileRef] | None = None  # None: the whole request failed
    remaining: NonNegativeInt = 0  # as in UpscaleDone: tiles still to be answered after this
    # True: the tiles were dropped because the requester cancelled them (not an error).
    cancelled: bool = False


class UpscaleCancelled(Event):
    """The requester no longer needs these tiles of one of its requests (a viewer moved
    away). Tiles not yet computed are dropped and answered ``upscale.failed`` with
    ``cancelled``; tiles already computing finish as usual."""

    topic: ClassVar[Topic] = Topic.UPSCALE_CANCELLED
    event_type: Literal["upscale.cancelled"] = "upscale.cancelled"

    request_id: RequestId
    exam_id: ExamId
    slide_number: SlideNumber
    priority: PriorityField  # picks the partition: the one its request went to
    tiles: Annotated[list[TileRef], Field(min_length=1, max_length=4096)]


# --- HIS --------------------------------------------------------------------------------


class PatientAdmitted(Event):
    topic: ClassVar[Topic] = Topic.PATIENT_ADMITTED
    event_type: Literal["patient.admitted"] = "patient.admitted"

    patient_id: PatientId
    visit_id: VisitId | None = None
    admitted_at: UtcDatetime
    ward: ShortText | None = None
    identity: PatientIdentity | None = None


class PatientDischarged(Event):
    topic: ClassVar[Topic] = Topic.PATIENT_DISCHARGED
    event_type: Literal["patient.discharged"] = "patient.discharged"

    patient_id: PatientId
    visit_id: VisitId | None = None
    discharged_at: UtcDatetime


# --- storage management and distribution ---------------------------------------------------


TierMoveReason = Literal["discharge", "age", "readmission", "hr_evicted"]


class TierMoved(Event, _SlideIds):
    topic: ClassVar[Topic] = Topic.TIER_MOVED
    event_type: Literal["tier.moved"] = "tier.moved"

    state: ImageStateField
    from_tier: StorageTierField
    to_tier: StorageTierField | None = None  # None: deleted (HR dropped from the cache)
    source: ObjectRef | None = None
    target: ObjectRef | None = None  # None for a deletion from the hr cache
    reason: TierMoveReason
    sha256: Sha256Hex | None = None


class DistributionAssigned(Event):
    topic: ClassVar[Topic] = Topic.DISTRIBUTION_ASSIGNED
    event_type: Literal["distribution.assigned"] = "distribution.assigned"

    terminal_id: TerminalId
    exam_id: ExamId
    slide_numbers: Annotated[list[SlideNumber], Field(min_length=1)]
    priority: PriorityField
    policy: ShortText  # the policy rule that chose the terminal's task class
    reason: Literal["new", "slides_added", "reassigned"] = "new"
    # The catalog assignment's revision this event announces: a consumer checks the event
    # against the catalog (an event naming a terminal that never held the exam is forged).
    assignment_revision: NonNegativeInt = 0


class DeadLetter(Event):
    """A message the agents could not process: where it was, why, and what it looked like
    without identity data. Never the raw bytes or the original key (the topic is kept 30 days,
    and a rejected message may hold names, birth dates and national IDs): a JSON payload is
    kept as a redacted copy, any other payload only as its size and a keyed digest. Built by
    ``core.dead_letters.dead_letter``, which does the redaction; the record key on Kafka is the
    dead letter's own event id."""

    topic: ClassVar[Topic] = Topic.DEAD_LETTER
    event_type: Literal["slidestream.dead_letter"] = "slidestream.dead_letter"
    # Version 2: the raw payload and key of version 1 became the redacted copy and digests.
    schema_version: Annotated[Literal[2], BeforeValidator(_not_bool)] = 2  # type: ignore[assignment]

    source_topic: NonEmptyStr
    partition: NonNegativeInt
    offset: NonNegativeInt
    # Keyed hash (``patient_ref``) of the original Kafka key, which is often a patient ID.
    key_ref: Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9a-f]{16,64}$")] | None = None
    payload_size: NonNegativeInt
    # HMAC-SHA256 of the payload bytes under the install's log salt (hex).
    payload_digest: Sha256Hex
    # The payload with identity fields redacted and patient IDs pseudonymised, when it was JSON
    # (not too large or deeply nested to copy); None otherwise.
    redacted: JsonValue | None = None
    error: Annotated[Reason, BeforeValidator(_truncate_reason)]
    received_at: UtcDatetime = Field(default_factory=utc_now)

    def kafka_key(self) -> str | None:
        return str(self.event_id)

    def redacted_field(self, name: str) -> JsonValue | None:
        """A top-level field of the redacted payload (None if absent or not an object)."""
        return self.redacted.get(name) if isinstance(self.redacted, dict) else None
