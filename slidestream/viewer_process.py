"""The viewer as a background process of ``slidestream up`` (pid and log in state_dir)."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
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
    try:
        with urllib.request.urlopen(viewer_url(settings) + "health", timeout=timeout_s) as reply:  # noqa: S310 - our own loopback URL
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_viewer(settings: Settings, *, wait_s: float = 60.0) -> int:
    """Start the viewer unless it runs; its pid once /health answers."""
    pid_file, log = _paths(settings)
    record = process.running_record(pid_file)
    if record is None:
        if process.port_taken(settings.viewer.host, settings.viewer.port):
            raise RuntimeError(f"port {settings.viewer.port} is taken by another program; "
                               "set SLIDESTREAM_VIEWER__PORT")
        # Host and port passed on, so that a settings copy with another port is what runs.
        env = {"SLIDESTREAM_VIEWER__HOST": settings.viewer.host, "SLIDESTREAM_VIEWER__PORT": str(settings.viewer.port)}
        pid = process.spawn([sys.executable, "-m", "slidestream", "viewer"], log_path=log, pid_path=pid_file,
                            env=env).pid
    else:
        pid = record.pid
    deadline = time.monotonic() + wait_s
    while not healthy(settings):
        if process.running_record(pid_file) is None:
            raise RuntimeError(f"the viewer exited at start; see {log}:\n{process.tail(log, 20)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the viewer did not answer within {wait_s:.0f} s; see {log}")
        time.sleep(0.3)
    return pid


def stop_viewer(settings: Settings) -> bool:
    pid_file, _ = _paths(settings)
    return process.stop(pid_file, grace_s=10.0) is not None


def viewer_pid(settings: Settings) -> int | None:
    record = process.running_record(_paths(settings)[0])
    return None if record is None else record.pid
