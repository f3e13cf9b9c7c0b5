"""Distribution end to end on the real stack with two reading terminals (issue 12).

A real Faust worker runs the distribution, upscale (default model, CPU) and tier agents; the
real viewer serves the terminal API; each terminal is the real ``slidestream terminal run
--once`` process. Slides are small (160 px at 5x, so x8 is 38 tiles) to keep compute short.

T-gi reads gi (stomach, colon); T-both reads gi and breast. The policy's grace period is its
least (10 s), so "offline" is quick to reach.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from catalog.assignments import Assignments
from catalog.db import connect, database
from core.kafka import KafkaSink, producer, tail_from_end
from core.settings import Settings
from schemas.catalog import AssignmentRecord, ReportRecord
from schemas.common import StorageTier
from schemas.events import DistributionAssigned
from schemas.layout import hr_provenance_key
from schemas.topics import Priority, Topic
from terminal.cache import TEMP_SUFFIX, LocalCache
from tests.integration.tierkit import WorkerProcess, commit_offsets, end_offsets, services, stage_slide, uid
from viewer.serve import running_viewer

pytestmark = pytest.mark.integration

GRACE_S = 10  # the policy's least: heartbeats are recorded at most every 5 s
POLICY = f"""
grace_period_s = {GRACE_S}
default_task_class = "general"

[[rules]]
name = "gi"
body_parts = ["stomach", "colon"]
task_class = "gi"

[[rules]]
name = "breast"
body_parts = ["breast"]
task_class = "breast"

[[rules]]
name = "renal"
body_parts = ["kidney"]
task_class = "renal"
"""
WORKER_MODULES = ("agents.probe", "agents.distribution", "agents.upscale", "agents.tiering")
CONSUMED = (Topic.SLIDE_STORED.value, Topic.DISTRIBUTION_ASSIGNED.value, Topic.UPSCALE_REQUESTED.value,
            Topic.UPSCALE_CANCELLED.value, Topic.UPSCALE_DONE.value)
SLIDE_PX = 160
STALL_S = 3
WORKER_LOG: dict[str, Path] = {}  # the module's worker log (what the distribution agent said)


class Terminal:
    """A registered terminal: its key file and cache, run as the real CLI."""

    def __init__(self, terminal_id: str, workdir: Path, server: str) -> None:
        self.id, self.server = terminal_id, server
        self.key_file = workdir / f"{terminal_id}.key"
        self.cache = workdir / f"{terminal_id}-cache"

    def register(self, classes: str) -> None:
        done = _cli("terminal", "register", "--id", self.id, "--task-classes", classes, "--capacity", "100",
                    "--owner-department", "GI pathology", "--key-file", str(self.key_file))
        assert done.returncode == 0, done.stderr

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key_file.read_text().strip()}", "X-Terminal-Id": self.id}

    async def heartbeat(self) -> None:
        async with httpx.AsyncClient(base_url=self.server, timeout=10) as client:
            (await client.post("/api/terminal/heartbeat", headers=self.headers)).raise_for_status()

    async def sync_once(self, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        # --timeout below the process timeout: a stuck sync ends with the terminal's own account
        # of what is missing instead of a killed process.
        return await asyncio.to_thread(_cli, "terminal", "run", "--id", self.id, "--key-file", str(self.key_file),
                                       "--server", self.server, "--cache-dir", str(self.cache), "--once",
                                       "--timeout", str(timeout - 30), env=env, timeout=timeout)

    def local_tiles(self, exam_id: str) -> list[Path]:
        return sorted((self.cache / exam_id).rglob("*.png")) if (self.cache / exam_id).exists() else []

    def leftovers(self) -> list[Path]:
        """Half-written downloads (the cache's temporary files)."""
        return sorted(self.cache.rglob(f"*{TEMP_SUFFIX}"))

    def unindexed(self, exam_id: str) -> list[Path]:
        """Tiles on disk that the cache's index does not list as verified."""
        cache = LocalCache(self.cache, max_bytes=1 << 40, min_free_bytes=0, retention_days=14).open()
        try:
            known = {cache.path(key) for key in cache.indexed(exam_id)}
        finally:
            cache.close()
        return [p for p in self.local_tiles(exam_id) if p not in known]


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slidestream", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def distribution_worker(stack: Settings, policy_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The worker in its own group, positioned at the topics' ends: it must not re-read (and
    compute) what earlier tests left on the topics."""
    group = uid("dist-")
    asyncio.run(commit_offsets(stack, group, asyncio.run(end_offsets(stack, CONSUMED))))
    WORKER_LOG["path"] = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = WorkerProcess(stack, group, WORKER_MODULES, WORKER_LOG["path"],
                           {"SLIDESTREAM_DISTRIBUTION__POLICY_FILE": str(policy_file),
                            "SLIDESTREAM_DISTRIBUTION__SWEEP_INTERVAL_S": "1",
                            "SLIDESTREAM_DISTRIBUTION__STALL_S": str(STALL_S)}).start()
    try:
        from slidestream.probe import probe_agents

        asyncio.run(probe_agents(stack, timeout=180))
        yield stack
    finally:
        worker.stop()


@pytest_asyncio.fixture
async def viewer(distribution_worker: Settings) -> AsyncIterator[str]:
    async with running_viewer(distribution_worker, compute=False) as (_, url):
        yield url.rstrip("/")


async def _store(settings: Settings, exam_id: str, body_part: str, slides: int = 1) -> None:
    patient = uid("PD")
    async with services(settings) as svc:
        for number in range(1, slides + 1):
            staged = await stage_slide(svc, patient_id=patient, exam_id=exam_id, slide_number=number, size=SLIDE_PX)
            await svc.saver.save(staged.model_copy(update={"body_part": body_part}))


async def _assignment(settings: Settings, exam_id: str, *, until: object = None,
                      timeout: float = 60) -> AssignmentRecord:
    client = connect(settings.mongo)
    try:
        assignments = Assignments(database(client, settings.mongo))
        deadline = time.monotonic() + timeout
        while True:
            found = await assignments.get(exam_id)
            if found is not None and (until is None or until(found)):  # type: ignore[operator]
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"assignment of {exam_id}: {found}")
            await asyncio.sleep(0.3)
    finally:
        await client.close()


class Heartbeats:
    """Heartbeats every second for the terminals in ``alive`` (as their agents would send);
    a terminal taken out of the set goes silent."""

    def __init__(self, *terminals: Terminal) -> None:
        self.alive = set(terminals)
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        while True:
            for t in list(self.alive):
                await t.heartbeat()
            await asyncio.sleep(1.0)

    async def __aenter__(self) -> Heartbeats:
        for t in self.alive:
            await t.heartbeat()
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_two_terminals_policy_precompute_offline_full_disk_and_final_report(
        distribution_worker: Settings, viewer: str, tmp_path: Path) -> None:
    settings = distribution_worker
    # Ids in this order: with equal loads the policy breaks the tie by id, so T-gi gets stomach.
    t_gi, t_both = Terminal(uid("Ta-gi-"), tmp_path, viewer), Terminal(uid("Tb-both-"), tmp_path, viewer)
    t_gi.register("gi")
    t_both.register("gi,breast")
    async with Heartbeats(t_gi, t_both) as beats:
        # Assignments follow the policy: stomach to a gi terminal, breast only to T-both.
        stomach, breast = uid("ED-S"), uid("ED-B")
        await _store(settings, stomach, "stomach")
        a_stomach = await _assignment(settings, stomach, until=lambda a: a.state == "assigned")
        await _store(settings, breast, "breast")
        a_breast = await _assignment(settings, breast, until=lambda a: a.state == "assigned")
        assert (a_stomach.terminal_id, a_stomach.task_class, a_stomach.rule) == (t_gi.id, "gi", "gi")
        assert (a_breast.terminal_id, a_breast.task_class) == (t_both.id, "breast")

        # HR local before reading: the one-shot sync ends with every HR tile of the exam in
        # the terminal's cache (x8 of 160 px: levels of 1280, 640 and 320 px, 25 + 9 + 4 tiles).
        done = await t_gi.sync_once()
        assert done.returncode == 0, done.stderr[-2000:]
        async with httpx.AsyncClient(base_url=viewer, timeout=30) as client:
            reply = await client.get(f"/api/terminal/exams/{stomach}/manifest", headers=t_gi.headers)
            reply.raise_for_status()
        slides = reply.json()["slides"]
        assert [s["expected"] for s in slides] == [25 + 9 + 4] and all(s["complete"] for s in slides)
        assert len(t_gi.local_tiles(stomach)) == 25 + 9 + 4
        assert not t_gi.leftovers() and not t_gi.unindexed(stomach)

        # T-gi goes silent past the grace period: its open exam goes to the other matching
        # terminal, which is online; the record keeps the earlier holder.
        beats.alive.discard(t_gi)
        moved = await _assignment(settings, stomach, until=lambda a: a.terminal_id == t_both.id,
                                  timeout=GRACE_S + 30)
        assert [hop.terminal_id for hop in moved.history] == [t_gi.id]
        assert moved.state == "assigned"
        # ... and T-gi deletes its copy once the exam is no longer on its list.
        again = await t_gi.sync_once()
        assert again.returncode == 0, again.stderr[-2000:]
        assert t_gi.local_tiles(stomach) == []

        # A full disk stops the download with a clear error and leaves nothing half-written.
        full = await t_both.sync_once(env={"SLIDESTREAM_TERMINAL__MIN_FREE_BYTES": str(1 << 60)})
        assert full.returncode != 0
        assert "free" in full.stderr.lower()
        assert not t_both.leftovers() and not t_both.unindexed(breast) and not t_both.unindexed(stomach)

        # With room, T-both gets both of its exams; a final report deletes that exam's copy.
        ok = await t_both.sync_once()
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert len(t_both.local_tiles(breast)) == 25 + 9 + 4
        assert len(t_both.local_tiles(stomach)) == 25 + 9 + 4
        async with services(settings) as svc:
            await svc.catalog.save_report(ReportRecord(exam_id=breast, author="dr.test", diagnosis="benign",
                                                       status="final"), expected_revision=None)
        await _assignment(settings, breast, until=lambda a: a.state == "done", timeout=30)
        after = await t_both.sync_once()
        assert after.returncode == 0, after.stderr[-2000:]
        assert t_both.local_tiles(breast) == []
        assert len(t_both.local_tiles(stomach)) == 25 + 9 + 4


async def test_a_forged_assignment_event_is_dead_lettered(distribution_worker: Settings, viewer: str,
                                                          tmp_path: Path) -> None:
    settings = distribution_worker
    exam = uid("ED-F")
    terminal = Terminal(uid("T-f-"), tmp_path, viewer)
    terminal.register("general")
    await terminal.heartbeat()
    await _store(settings, exam, "skin")
    assigned = await _assignment(settings, exam, until=lambda a: a.state == "assigned")
    assert assigned.terminal_id == terminal.id
    forged = DistributionAssigned(terminal_id="T-intruder", exam_id=exam, slide_numbers=[1],
                                  priority=Priority.DISTRIBUTION, policy="general",
                                  assignment_revision=assigned.revision)
    async with tail_from_end(settings, Topic.DEAD_LETTER.value, wait_s=30) as tail, producer(settings) as prod:
        await KafkaSink(prod)(forged)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for records in (await tail.getmany(timeout_ms=1000)).values():
                for record in records:
                    letter = json.loads(record.value)
                    if letter.get("source_topic") == Topic.DISTRIBUTION_ASSIGNED.value \
                            and str(forged.event_id) in json.dumps(letter):
                        assert "not backed by the catalog" in letter["error"]
                        return
        raise AssertionError("the forged distribution.assigned never reached the dead-letter topic")


async def test_a_precomputation_skipped_for_a_scan_cut_that_was_then_dropped_is_topped_up(
        distribution_worker: Settings, viewer: str, tmp_path: Path) -> None:
    """The demo's case: slide 1 counts as scanned while its scan is being cut, so its
    pre-computation is skipped; the cut is then dropped (a discharge). The sweep sees the
    exam's computed tiles not growing and asks for the missing ones; the terminal completes."""
    settings = distribution_worker
    terminal = Terminal(uid("T-r-"), tmp_path, viewer)
    terminal.register("renal")
    exam = uid("ED-R")
    async with services(settings) as svc:
        marker = svc.store.ref(StorageTier.TEMPORARY, hr_provenance_key(exam, 1, 8))
        await svc.store.put_bytes(marker, json.dumps({"source": "scanned", "status": "cutting"}).encode(),
                                  content_type="application/json")
        async with Heartbeats(terminal):
            await _store(settings, exam, "kidney")
            assert (await _assignment(settings, exam, until=lambda a: a.state == "assigned")).terminal_id == terminal.id
            await _logged(f'"exam_id": "{exam}"', '"scanned_slides": 1')  # pre-computation skipped the slide
            await svc.store.delete(marker)  # the cut was dropped
            done = await terminal.sync_once()
            assert done.returncode == 0, done.stderr[-2000:]
    assert len(terminal.local_tiles(exam)) == 25 + 9 + 4
    await _logged('"event": "distribution.top_up"', f'"exam_id": "{exam}"')


async def _logged(*parts: str, timeout: float = 60) -> str:
    """The first worker log line holding every one of ``parts``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in WORKER_LOG["path"].read_text(errors="replace").splitlines():
            if all(part in line for part in parts):
                return line
        await asyncio.sleep(0.3)
    raise AssertionError(f"no worker log line with {parts}")
