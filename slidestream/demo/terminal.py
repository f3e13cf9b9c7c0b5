"""The demo's distribution step: a reading terminal of the demo department is registered (its
own key, made fresh on every run), the waiting demo exam is assigned to it, its 40x is
pre-computed at distribution priority and copied into the terminal's local cache; the
pathologist then reads it in high-resolution mode from the terminal's loopback address."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from catalog.assignments import Assignments
from catalog.db import connect, database
from catalog.terminals import TerminalExists, Terminals
from core.secrets import key_digest, new_key
from core.settings import Settings
from schemas.catalog import TerminalRecord
from slidestream.commands.terminal_admin import write_key_file
from slidestream.terminal_process import start_terminal, terminal_url

DEMO_TERMINAL = "demo-terminal"
DEMO_EXAM_PREFIX = "DEMO-"  # slidestream.demo.ingest names its exams DEMO-<time>


async def register_demo_terminal(settings: Settings, department: str, exam_id: str) -> Path:
    """Register the demo terminal (or give it a new key) and write its key to a 0600 file.
    Earlier demo runs' exams still open on it are closed (as if reported), so that this run's
    exam is the one it receives, not a queue of old ones."""
    key = new_key()
    client = connect(settings.mongo)
    try:
        db = database(client, settings.mongo)
        assignments = Assignments(db)
        for old in await assignments.of_terminal(DEMO_TERMINAL):
            if old.exam_id != exam_id and old.exam_id.startswith(DEMO_EXAM_PREFIX):
                await assignments.update(old.exam_id, lambda a: a.model_copy(update={"state": "done"})
                                         if a.state == "assigned" else None)
        terminals = Terminals(db)
        record = TerminalRecord(terminal_id=DEMO_TERMINAL, task_classes=["general"], capacity_per_day=1000,
                                owner_kind="department", owner=department, key_digest=key_digest(key))
        try:
            await terminals.register(record)
        except TerminalExists:
            await terminals.set_key(DEMO_TERMINAL, key_digest(key))
            await terminals.set_active(DEMO_TERMINAL, True)
    finally:
        await client.close()
    key_file = settings.state_dir / "secrets" / "demo-terminal.key"
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_file.unlink(missing_ok=True)  # the last run's key, rotated above
    write_key_file(key_file, key)
    return key_file


async def _wait_until_local(settings: Settings, exam_id: str, username: str, password: str,
                            timeout_s: float, stall_s: float = 240.0) -> dict[str, object]:
    """The terminal's view of the exam once it is complete locally, or when it stops moving
    for ``stall_s`` or ``timeout_s`` passes (the view then says why)."""
    viewer = f"http://{settings.viewer.host}:{settings.viewer.port}"
    async with httpx.AsyncClient(timeout=30) as client:
        login = await client.post(f"{viewer}/api/auth/login", json={"username": username, "password": password})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        start = last_move = time.monotonic()
        shown, last_fraction = -1, -1.0
        view: dict[str, object] = {}
        while time.monotonic() - start < timeout_s and time.monotonic() - last_move < stall_s:
            try:
                reply = await client.get(f"{terminal_url(settings)}terminal/exams/{exam_id}", headers=headers)
                reply.raise_for_status()
            except httpx.HTTPError as exc:
                return {"complete": False, "reason": f"the terminal agent does not answer ({type(exc).__name__})"}
            view = reply.json()
            fraction = float(view.get("fraction") or 0)  # type: ignore[arg-type]
            if fraction != last_fraction:
                last_fraction, last_move = fraction, time.monotonic()
            percent = int(100 * fraction)
            if percent // 10 != shown // 10:  # every 10 % step once
                print(f"  exam {exam_id} on the terminal: {percent} %", flush=True)
                shown = percent
            if view.get("complete"):
                return view
            await asyncio.sleep(2.0)
        return view


def start_demo_terminal(settings: Settings, exam_id: str, department: str, username: str, password: str,
                        timeout_s: float = 900.0) -> str:
    key_file = asyncio.run(register_demo_terminal(settings, department, exam_id))
    start_terminal(settings, DEMO_TERMINAL, key_file)
    print(f"terminal {DEMO_TERMINAL} registered and running; exam {exam_id} is assigned to it, its 40x "
          "computed at distribution priority and copied to the terminal's cache")
    view = asyncio.run(_wait_until_local(settings, exam_id, username, password, timeout_s))
    url = terminal_url(settings)
    if view.get("complete"):
        print(f"high-resolution mode: {url}  (the terminal's loopback viewer; same sign-in) -- every 40x tile of "
              f"exam {exam_id} is read from the workstation's local copy")
    else:
        print(f"the terminal is still copying exam {exam_id} ({view.get('reason')}); {url} shows its progress")
    return url
