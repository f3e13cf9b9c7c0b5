"""`slidestream slide` and `slidestream dead-letters` against the real stack: what an operator
sees about a slide and about refused events, and that no identity data is printed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.dead_letters import dead_letter
from core.kafka import producer, send_event
from core.settings import Settings
from schemas.common import ObjectRef, StorageTier
from schemas.layout import qc_report_prefix
from schemas.topics import Topic
from slidestream.commands.operator import show_dead_letters, show_slide
from tests.integration.test_tier_services import saved_patient
from tests.integration.tierkit import services, uid

pytestmark = pytest.mark.integration


async def test_slide_shows_the_qc_verdict_catalog_rows_tiers_and_history(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await saved_patient(svc, slides=1)
        report = {"passed": False, "reason": "failed: blur: 41% of tissue tiles blurred", "failure": "quality",
                  "qc": {"checks": [{"name": "blur", "passed": False, "judged": True, "reason": "41% blurred"},
                                    {"name": "tissue", "passed": True, "judged": True, "reason": ""}]}}
        await svc.store.put_bytes(ObjectRef(bucket=svc.store.bucket("ingest"),
                                            key=qc_report_prefix(exam, 1) + "report.json"),
                                  json.dumps(report).encode(), content_type="application/json")
        await svc.mover.move(images[0], StorageTier.MID, "discharge")
        lines: list[str] = []
        assert await show_slide(stack, exam, 1, echo=lines.append) == 0
    text = "\n".join(lines)
    assert "QC: failed (quality): failed: blur" in text and "blur: FAILED - 41% blurred" in text
    assert f"LR in mid at slidestream-mid/lr/{exam}/0001.tiff" in text and images[0].sha256[:16] in text
    assert "tier_move ok by tier-agent" in text
    assert patient not in text  # IDs of exams and slides only

    lines.clear()
    assert await show_slide(stack, uid("E"), 3, echo=lines.append) == 1
    assert "no report" in lines[1] and "no image of this slide" in lines[2]


async def test_dead_letters_show_when_where_and_why_but_never_the_payload_or_key(stack: Settings) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    secret = uid("PATIENT-SECRET-")
    letter = dead_letter(f'{{"patient_id": "{secret}"}}'.encode(), source_topic=Topic.PATIENT_ADMITTED.value,
                         partition=1, offset=42, error=f"admitted_at: field required ({uid('why-')})", key=secret)
    assert secret.encode() not in letter.to_json_bytes()
    async with producer(stack) as prod:
        await send_event(prod, Topic.DEAD_LETTER.value, letter, key=letter.kafka_key())
    lines: list[str] = []
    assert await show_dead_letters(stack, since, echo=lines.append) == 0
    mine = [line for line in lines if letter.error in line]
    assert len(mine) == 1 and "patient.admitted[1]@42" in mine[0]
    assert f"{letter.payload_size} bytes" in mine[0] and f"key ref {letter.key_ref}" in mine[0]
    assert not any(secret in line for line in lines)
    lines.clear()
    await show_dead_letters(stack, datetime.now(UTC) + timedelta(minutes=1), echo=lines.append)
    assert lines == [lines[-1]] and lines[-1].startswith("0 dead letter(s)")
