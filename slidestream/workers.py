"""Start and stop Faust agent workers as background processes (pid and log files in state_dir).

Process bookkeeping is infra.process's; this module only says what a worker is.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings
from infra import process

MAX_WORKERS = 16


@dataclass(frozen=True)
class WorkerInfo:
    index: int
    pid: int
    log: Path


def _paths(settings: Settings, index: int) -> tuple[Path, Path]:
    base = settings.state_dir.resolve() / "workers"
    return base / f"worker-{index}.pid", base / f"worker-{index}.log"


def worker_argv(settings: Settings) -> list[str]:
    return [sys.executable, "-m", "agents"]


def worker_status(settings: Settings) -> list[WorkerInfo]:
    infos = []
    for index in range(MAX_WORKERS):
        pid_file, log = _paths(settings, index)
        record = process.running_record(pid_file)
        if record is not None:
            infos.append(WorkerInfo(index, record.pid, log))
    return infos


def start_workers(settings: Settings, count: int = 1, env: dict[str, str] | None = None) -> list[WorkerInfo]:
    """Start workers that are not already running; all share one consumer group."""
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"worker count must be 1..{MAX_WORKERS}, got {count}")
    infos = []
    for index in range(count):
        pid_file, log = _paths(settings, index)
        record = process.running_record(pid_file)
        if record is None:
            proc = process.spawn(worker_argv(settings), log_path=log, pid_path=pid_file, env=env)
            infos.append(WorkerInfo(index, proc.pid, log))
        else:
            infos.append(WorkerInfo(index, record.pid, log))
    return infos


def stop_workers(settings: Settings, grace_s: float = 20.0) -> int:
    """SIGTERM every worker (Faust commits offsets on a clean stop), SIGKILL after ``grace_s``."""
    stopped = 0
    for index in range(MAX_WORKERS):
        pid_file, _ = _paths(settings, index)
        if process.stop(pid_file, grace_s=grace_s) is not None:
            stopped += 1
    return stopped
