"""Where an image belongs: the tiering rules of SPEC 2 ("schedule") as pure functions.

LR images (state 0) live forever in one of three permanent tiers:

* **recent** while their patient is in hospital (status ``admitted``);
* **mid** otherwise, while the slide was used within the age limit (default 365 days);
* **long** once it has not been used for longer than the age limit.

"Used" is the usage-frequency rule, estimated from patient information and access history
(SPEC: "usage frequency is estimated from patient information"): the last use of a slide
is the latest of its acquisition, its last retrieval, and the patient's most recent exam.
A patient with a fresh exam is likely to have their older slides compared, so those stay
in mid; a slide read again from long returns to mid on the next sweep; a readmitted
patient's slides return to recent.

A patient whose status the HIS has not reported (``unknown``, e.g. an outpatient) keeps
their slides where they were saved until the age rule sends them to long: we do not
guess that someone left hospital.

HR images (state 1) live only in the temporary hr-cache: they are dropped when the patient
is discharged (the discharge handler does this at once), and otherwise when the patient is
not in hospital and the tiles were not used for ``hr_idle_evict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from schemas.catalog import ImageRecord, PatientRecord
from schemas.common import ImageState, StorageTier

MoveReason = Literal["discharge", "age", "readmission", "hr_evicted"]
PatientStatus = Literal["admitted", "discharged", "unknown"]


@dataclass(frozen=True)
class TierPolicy:
    age_limit: timedelta = timedelta(days=365)
    hr_idle_evict: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if self.age_limit <= timedelta(0):
            raise ValueError("age_limit must be positive")
        if self.hr_idle_evict < timedelta(0):
            raise ValueError("hr_idle_evict must not be negative")

    @classmethod
    def from_settings(cls, tiering: object) -> TierPolicy:
        return cls(
            age_limit=timedelta(days=tiering.age_limit_days),
            hr_idle_evict=timedelta(hours=tiering.hr_idle_evict_h),
        )


@dataclass(frozen=True)
class Placement:
    """Where an image should go. ``tier`` None means: drop it (HR cache entries only)."""

    tier: StorageTier | None
    reason: MoveReason


def last_use(image: ImageRecord, patient: PatientRecord | None) -> datetime:
    """Latest of acquisition, last access and the patient's most recent exam."""
    moments = [image.acquired_at]
    if image.last_accessed_at is not None:
        moments.append(image.last_accessed_at)
    if patient is not None and patient.last_exam_at is not None:
        moments.append(patient.last_exam_at)
    return max(moments)


def patient_status(patient: PatientRecord | None) -> PatientStatus:
    return "unknown" if patient is None else patient.status


def lr_target(image: ImageRecord, patient: PatientRecord | None, now: datetime,
              policy: TierPolicy) -> StorageTier:
    """The permanent tier an LR image belongs in now."""
    status = patient_status(patient)
    if status == "admitted":
        return StorageTier.RECENT
    aged = now - last_use(image, patient) > policy.age_limit
    if aged:
        return StorageTier.LONG
    if status == "unknown":
        # No word from the HIS: keep the slide where it is unless the age rule applies.
        return image.tier if image.tier is not StorageTier.LONG else StorageTier.MID
    return StorageTier.MID


def _lr_reason(current: StorageTier, target: StorageTier, status: PatientStatus) -> MoveReason:
    if target is StorageTier.RECENT:
        return "readmission"
    if current is StorageTier.RECENT and status == "discharged":
        return "discharge"
    return "age"  # by the last-use age rule (mid <-> long, or unknown status past the limit)


def hr_should_drop(image: ImageRecord, patient: PatientRecord | None, now: datetime,
                   policy: TierPolicy) -> bool:
    if patient_status(patient) == "admitted":
        return False
    used = image.last_accessed_at or image.acquired_at
    return now - used >= policy.hr_idle_evict


def decide(image: ImageRecord, patient: PatientRecord | None, now: datetime,
           policy: TierPolicy) -> Placement | None:
    """What to do with ``image`` now; None when it is where it belongs."""
    if image.state is ImageState.HR:
        if hr_should_drop(image, patient, now, policy):
            return Placement(None, "hr_evicted")
        return None
    target = lr_target(image, patient, now, policy)
    if target is image.tier:
        return None
    return Placement(target, _lr_reason(image.tier, target, patient_status(patient)))


def on_discharge(image: ImageRecord, patient: PatientRecord | None, now: datetime,
                 policy: TierPolicy) -> Placement | None:
    """Discharge: HR images leave the cache at once; LR images follow the rules (a
    discharged patient's recent slides go to mid, or to long if unused for the age limit).
    A discharge older than the patient's latest admission changes nothing."""
    if patient_status(patient) == "admitted":
        return None
    if image.state is ImageState.HR:
        return Placement(None, "discharge")
    return decide(image, patient, now, policy)


def on_admission(image: ImageRecord) -> Placement | None:
    """Readmission promotes a returning patient's LR slides back to recent."""
    if image.state is ImageState.HR or image.tier is StorageTier.RECENT:
        return None
    return Placement(StorageTier.RECENT, "readmission")
