"""Tiering rules (SPEC 2, schedule): which tier an image belongs in, and patient status from
HIS events in any order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog import tiering
from catalog.patient_status import apply_admission, apply_discharge, apply_exam, status_from
from catalog.tiering import Placement, TierPolicy
from schemas.catalog import ImageRecord, PatientRecord
from schemas.common import ImageState, ObjectRef, StorageTier

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = TierPolicy(age_limit=timedelta(days=365), hr_idle_evict=timedelta(hours=24))


def image(tier: StorageTier = StorageTier.RECENT, *, state: ImageState = ImageState.LR,
          acquired: datetime = NOW - timedelta(days=3), accessed: datetime | None = None) -> ImageRecord:
    return ImageRecord(
        exam_id="E1", patient_id="P1", slide_number=1, state=state, tier=tier,
        object=ObjectRef(bucket="slidestream-recent", key="lr/E1/0001.tiff"),
        acquired_at=acquired, last_accessed_at=accessed, access_count=1 if accessed else 0,
    )


def patient(status: str, *, last_exam: datetime | None = None) -> PatientRecord:
    admitted = NOW - timedelta(days=10)
    discharged = NOW - timedelta(days=1) if status == "discharged" else None
    return PatientRecord(patient_id="P1", status=status, admitted_at=admitted if status != "unknown" else None,
                         discharged_at=discharged, last_exam_at=last_exam)


def test_discharged_patients_recent_slides_go_to_mid() -> None:
    assert tiering.decide(image(), patient("discharged"), NOW, POLICY) == Placement(StorageTier.MID, "discharge")


def test_admitted_patients_slides_stay_in_recent() -> None:
    assert tiering.decide(image(), patient("admitted"), NOW, POLICY) is None


def test_readmission_promotes_slides_from_mid_and_long_back_to_recent() -> None:
    for tier in (StorageTier.MID, StorageTier.LONG):
        old = image(tier, acquired=NOW - timedelta(days=900))
        assert tiering.decide(old, patient("admitted"), NOW, POLICY) == Placement(StorageTier.RECENT, "readmission")
        assert tiering.on_admission(old) == Placement(StorageTier.RECENT, "readmission")
    assert tiering.on_admission(image(StorageTier.RECENT)) is None


def test_mid_slides_older_than_the_age_limit_go_to_long() -> None:
    old = image(StorageTier.MID, acquired=NOW - timedelta(days=366))
    assert tiering.decide(old, patient("discharged"), NOW, POLICY) == Placement(StorageTier.LONG, "age")
    young = image(StorageTier.MID, acquired=NOW - timedelta(days=364))
    assert tiering.decide(young, patient("discharged"), NOW, POLICY) is None


def test_age_limit_is_configurable() -> None:
    short = TierPolicy(age_limit=timedelta(days=30))
    slide = image(StorageTier.MID, acquired=NOW - timedelta(days=31))
    assert tiering.decide(slide, patient("discharged"), NOW, short) == Placement(StorageTier.LONG, "age")
    assert tiering.decide(slide, patient("discharged"), NOW, POLICY) is None


def test_recent_access_keeps_an_old_slide_in_mid_and_recalls_it_from_long() -> None:
    read_lately = NOW - timedelta(days=5)
    in_mid = image(StorageTier.MID, acquired=NOW - timedelta(days=800), accessed=read_lately)
    assert tiering.decide(in_mid, patient("discharged"), NOW, POLICY) is None
    in_long = image(StorageTier.LONG, acquired=NOW - timedelta(days=800), accessed=read_lately)
    assert tiering.decide(in_long, patient("discharged"), NOW, POLICY) == Placement(StorageTier.MID, "age")


def test_a_new_exam_of_the_patient_keeps_their_older_slides_in_mid() -> None:
    old = image(StorageTier.MID, acquired=NOW - timedelta(days=800))
    fresh_exam = patient("discharged", last_exam=NOW - timedelta(days=20))
    assert tiering.decide(old, fresh_exam, NOW, POLICY) is None


def test_discharge_of_a_patient_with_only_old_slides_goes_straight_to_long() -> None:
    old = image(StorageTier.RECENT, acquired=NOW - timedelta(days=700))
    assert tiering.on_discharge(old, patient("discharged"), NOW, POLICY) == Placement(StorageTier.LONG, "discharge")


def test_unknown_status_keeps_slides_in_place_until_the_age_limit() -> None:
    assert tiering.decide(image(StorageTier.RECENT), None, NOW, POLICY) is None
    assert tiering.decide(image(StorageTier.MID), patient("unknown"), NOW, POLICY) is None
    old = image(StorageTier.RECENT, acquired=NOW - timedelta(days=400))
    assert tiering.decide(old, None, NOW, POLICY) == Placement(StorageTier.LONG, "age")


def test_hr_images_are_dropped_at_discharge_but_kept_while_admitted() -> None:
    hr = image(StorageTier.TEMPORARY, state=ImageState.HR, acquired=NOW - timedelta(minutes=5))
    assert tiering.on_discharge(hr, patient("discharged"), NOW, POLICY) == Placement(None, "discharge")
    assert tiering.on_discharge(hr, patient("admitted"), NOW, POLICY) is None
    assert tiering.decide(hr, patient("admitted"), NOW, POLICY) is None


def test_idle_hr_images_of_patients_not_in_hospital_are_evicted() -> None:
    used_lately = image(StorageTier.TEMPORARY, state=ImageState.HR, acquired=NOW - timedelta(days=3),
                        accessed=NOW - timedelta(hours=2))
    assert tiering.decide(used_lately, patient("discharged"), NOW, POLICY) is None
    idle = image(StorageTier.TEMPORARY, state=ImageState.HR, acquired=NOW - timedelta(days=3),
                 accessed=NOW - timedelta(hours=30))
    assert tiering.decide(idle, patient("discharged"), NOW, POLICY) == Placement(None, "hr_evicted")


def test_hr_images_never_get_a_permanent_tier() -> None:
    hr = image(StorageTier.TEMPORARY, state=ImageState.HR, acquired=NOW - timedelta(days=900))
    for status in ("admitted", "discharged", "unknown"):
        placement = tiering.decide(hr, patient(status), NOW, POLICY)
        assert placement is None or placement.tier is None


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TierPolicy(age_limit=timedelta(0))


# --- patient status from HIS events -----------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
moments = st.integers(min_value=0, max_value=10_000).map(lambda m: T0 + timedelta(minutes=m))
his_events = st.lists(st.tuples(st.sampled_from(["admit", "discharge"]), moments), min_size=1, max_size=8)


def _apply(events: list[tuple[str, datetime]]) -> PatientRecord:
    record = PatientRecord(patient_id="P1", created_at=T0)
    for kind, at in events:
        record = apply_admission(record, at) if kind == "admit" else apply_discharge(record, at)
    return record


@given(his_events, st.randoms(use_true_random=False))
def test_status_does_not_depend_on_delivery_order_or_repeats(events, rnd) -> None:
    shuffled = list(events) + list(events)  # every event delivered twice
    rnd.shuffle(shuffled)
    assert _apply(shuffled) == _apply(sorted(events, key=lambda e: e[1]))


@given(his_events)
def test_status_follows_the_latest_event(events) -> None:
    record = _apply(events)
    latest_admit = max((at for kind, at in events if kind == "admit"), default=None)
    latest_discharge = max((at for kind, at in events if kind == "discharge"), default=None)
    assert record.admitted_at == latest_admit and record.discharged_at == latest_discharge
    if latest_admit is not None and (latest_discharge is None or latest_admit > latest_discharge):
        assert record.status == "admitted"
    else:
        assert record.status == "discharged"


def test_status_from_times() -> None:
    assert status_from(None, None) == "unknown"
    assert status_from(T0, None) == "admitted"
    assert status_from(T0, T0 + timedelta(days=1)) == "discharged"
    assert status_from(T0 + timedelta(days=2), T0 + timedelta(days=1)) == "admitted"


def test_newest_admission_sets_ward_and_identity_older_one_does_not() -> None:
    record = PatientRecord(patient_id="P1", created_at=T0)
    record = apply_admission(record, T0 + timedelta(days=5), ward="W5", visit_id="V5")
    stale = apply_admission(record, T0 + timedelta(days=1), ward="W1", visit_id="V1")
    assert stale == record and record.ward == "W5" and record.visit_id == "V5"


def test_last_exam_only_moves_forward() -> None:
    record = apply_exam(PatientRecord(patient_id="P1", created_at=T0), T0 + timedelta(days=3))
    assert apply_exam(record, T0 + timedelta(days=1)).last_exam_at == T0 + timedelta(days=3)
    assert apply_exam(record, T0 + timedelta(days=9)).last_exam_at == T0 + timedelta(days=9)
