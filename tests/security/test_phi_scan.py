"""PHI scan (issue 13): patient identity flows through the running system - a valid
admission with a full identity from the HIS principal, an invalid one that is dead-lettered -
and afterwards no log file of the stack and no dead letter holds any of it.

In ``make test`` this directory runs after tests/integration in the same session, on the same
stack, so the logs and the dead-letter topic it reads are those of the whole integration suite
(server logs, agent workers', the viewer's). Data files (Kafka segments, the catalog) hold
identity by design and are not scanned; their directories are private (0700).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.kafka import producer, records_since
from core.settings import Settings
from schemas.events import DeadLetter, PatientAdmitted
from schemas.examples import IDENTITY, PATIENT_ID
from schemas.registry import parse_event
from schemas.topics import Topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Every identity value of the example patient, in the spellings a log could carry it.
PHI: tuple[str, ...] = tuple(v for v in (
    PATIENT_ID, IDENTITY.name, IDENTITY.given_name, IDENTITY.family_name, IDENTITY.national_id,
    IDENTITY.address, IDENTITY.phone, IDENTITY.birth_date and IDENTITY.birth_date.isoformat(),
    IDENTITY.birth_date and IDENTITY.birth_date.strftime("%Y%m%d"),
) if v)
LOG_DIRS = ("logs", "workers", "viewer", "his")  # under the state dir; server data dirs are not logs


def hits_in(data: bytes) -> list[str]:
    return [value for value in PHI if value.encode() in data]


@pytest.fixture(scope="module")
async def phi_flowed(agent_worker: Settings) -> str:
    """Sends one valid and one invalid admission of the example patient; returns the invalid
    one's event id once its dead letter is on the topic (the valid one was sent first, to the
    same partition, so the worker has handled it by then)."""
    started = datetime.now(UTC)
    valid = PatientAdmitted(patient_id=PATIENT_ID, admitted_at=datetime.now(UTC), ward="PHI-SCAN",
                            visit_id=f"V-{uuid.uuid4().hex[:6]}", identity=IDENTITY)
    invalid = json.loads(valid.model_dump_json())
    invalid["admitted_at"] = "not a time"
    invalid["event_id"] = str(uuid.uuid4())
    async with producer(agent_worker, principal="his") as prod:
        for value in (valid.to_json_bytes(), json.dumps(invalid).encode()):
            await prod.send_and_wait(Topic.PATIENT_ADMITTED.value, value, key=PATIENT_ID.encode())
    for _ in range(120):
        letters = [parse_event(Topic.DEAD_LETTER.value, r.value)
                   for r in await records_since(agent_worker, Topic.DEAD_LETTER.value, started)]
        if any(isinstance(x, DeadLetter) and x.source_topic == Topic.PATIENT_ADMITTED.value for x in letters):
            return invalid["event_id"]
        await asyncio.sleep(0.5)
    raise AssertionError("the invalid admission was not dead-lettered within 60 s")


def log_files(state_dir: Path) -> list[Path]:
    return sorted(p for name in LOG_DIRS if (state_dir / name).is_dir()
                  for p in (state_dir / name).rglob("*") if p.is_file() and not p.name.endswith(".pid"))


def test_no_log_file_of_the_stack_holds_patient_data(agent_worker: Settings, phi_flowed: str) -> None:
    files = log_files(agent_worker.state_dir.resolve())
    assert any(p.parent.name == "workers" for p in files), "the agent worker's log should be scanned"
    found = {str(p): hits for p in files if (hits := hits_in(p.read_bytes()))}
    assert not found, f"identity data in logs: {found}"


async def test_no_dead_letter_holds_patient_data(agent_worker: Settings, phi_flowed: str) -> None:
    records = await records_since(agent_worker, Topic.DEAD_LETTER.value, datetime(2000, 1, 1, tzinfo=UTC),
                                  limit=1_000_000)
    assert records, "the dead-letter topic should hold at least the invalid admission"
    found = [(r.partition, r.offset, hits) for r in records
             if (hits := hits_in(r.value or b"") + hits_in(r.key or b""))]
    assert not found, f"identity data in dead letters: {found}"
