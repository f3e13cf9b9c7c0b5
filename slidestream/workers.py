"""Start and stop Faust agent workers as background processes (pid and log files in state_dir)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slidestream.settings import Settings


@dataclass(frozen=True)
class WorkerInfo:
    index: int
    pid: int | None
    running: bool
    log: Path


def _paths(settings: Settings, index: int) -> tuple[Path, Path]:
    base = settings.state_dir.resolve() / "workers"
    base.mkdir(parents=True, exist_ok=True)
    return base / f"worker-{index}.pid", base / f"worker-{index}.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def worker_status(settings: Settings, count: int = 8) -> list[WorkerInfo]:
    infos = []
    for index in range(count):
        pid_file, log = _paths(settings, index)
        pid = _read_pid(pid_file)
        if pid is not None:
            infos.append(WorkerInfo(index, pid, _alive(pid), log))
    return infos


def start_workers(settings: Settings, count: int = 1, env: dict[str, str] | None = None) -> list[WorkerInfo]:
    """Start workers that are not already running; all share one consumer group."""
    started = []
    for index in range(count):
        pid_file, log = _paths(settings, index)
        pid = _read_pid(pid_file)
        if pid is not None and _alive(pid):
            started.append(WorkerInfo(index, pid, True, log))
            continue
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agents", "worker", "--loglevel", settings.log_level],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, start_new_session=True,
            )
        pid_file.write_text(str(proc.pid))
        started.append(WorkerInfo(index, proc.pid, True, log))
    return started


def stop_workers(settings: Settings, timeout: float = 20.0) -> int:
    """SIGTERM every recorded worker (Faust commits offsets on a clean stop), then SIGKILL."""
    stopped = 0
    for info in worker_status(settings):
        pid_file, _ = _paths(settings, info.index)
        if info.pid and info.running:
            os.kill(info.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(info.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(info.pid):
                os.kill(info.pid, signal.SIGKILL)
            stopped += 1
        pid_file.unlink(missing_ok=True)
    return stopped
