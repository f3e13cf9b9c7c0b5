"""The viewer as a background process of ``slidestream up`` (pid and log in state_dir)."""

from __future__ import annotations

import sys
from pathlib import Path

from core.settings import Settings
from infra import process


def viewer_log(settings: Settings) -> Path:
    return _paths(settings)[1]


def _paths(settings: Settings) -> tuple[Path, Path]:
    base = settings.state_dir.resolve() / "viewer"
    return base / "viewer.pid", base / "viewer.log"


def viewer_url(settings: Settings) -> str:
    return f"http://{settings.viewer.host}:{settings.viewer.port}/"


def healthy(settings: Settings, timeout_s: float = 2.0) -> bool:
    return process.answers_health(viewer_url(settings) + "health", timeout_s)


def start_viewer(settings: Settings, *, wait_s: float = 60.0) -> int:
    """Start the viewer unless it runs; its pid once /health answers."""
    pid_file, log = _paths(settings)
    # Host and port passed on, so that a settings copy with another port is what runs.
    env = {"SLIDESTREAM_VIEWER__HOST": settings.viewer.host, "SLIDESTREAM_VIEWER__PORT": str(settings.viewer.port)}
    return process.start_service("viewer", [sys.executable, "-m", "slidestream", "viewer"], pid_path=pid_file,
                                 log_path=log, host=settings.viewer.host, port=settings.viewer.port,
                                 port_setting="SLIDESTREAM_VIEWER__PORT", health_url=viewer_url(settings) + "health",
                                 env=env, wait_s=wait_s)


def stop_viewer(settings: Settings) -> bool:
    pid_file, _ = _paths(settings)
    return process.stop(pid_file, grace_s=10.0) is not None


def viewer_pid(settings: Settings) -> int | None:
    record = process.running_record(_paths(settings)[0])
    return None if record is None else record.pid
