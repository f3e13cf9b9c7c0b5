"""The demo's terminal agent as a background process (pid and log in state_dir), as a reading
workstation would run ``slidestream terminal run``; ``slidestream down`` stops it."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.settings import Settings
from infra import process


def _paths(settings: Settings) -> tuple[Path, Path]:
    base = settings.state_dir.resolve() / "terminal"
    return base / "terminal.pid", base / "terminal.log"


def terminal_url(settings: Settings) -> str:
    return f"http://{settings.terminal.host}:{settings.terminal.port}/"


def _answers(settings: Settings) -> bool:
    try:  # the loopback server forwards /health to the viewer: both are up when it answers
        with urllib.request.urlopen(terminal_url(settings) + "health", timeout=2) as reply:  # noqa: S310 - loopback
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_terminal(settings: Settings, terminal_id: str, key_file: Path, *, wait_s: float = 60.0) -> int:
    """Start the terminal agent unless it runs; its pid once its loopback server answers."""
    pid_file, log = _paths(settings)
    record = process.running_record(pid_file)
    if record is None:
        if process.port_taken(settings.terminal.host, settings.terminal.port):
            raise RuntimeError(f"port {settings.terminal.port} is taken by another program; "
                               "set SLIDESTREAM_TERMINAL__PORT")
        server = f"http://{settings.viewer.host}:{settings.viewer.port}"
        pid = process.spawn([sys.executable, "-m", "slidestream", "terminal", "run", "--id", terminal_id,
                             "--key-file", str(key_file), "--server", server], log_path=log, pid_path=pid_file).pid
    else:
        pid = record.pid
    deadline = time.monotonic() + wait_s
    while not _answers(settings):
        if process.running_record(pid_file) is None:
            raise RuntimeError(f"the terminal agent exited at start; see {log}:\n{process.tail(log, 20)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the terminal agent did not answer within {wait_s:.0f} s; see {log}")
        time.sleep(0.3)
    return pid


def stop_terminal(settings: Settings) -> bool:
    return process.stop(_paths(settings)[0], grace_s=10.0) is not None
