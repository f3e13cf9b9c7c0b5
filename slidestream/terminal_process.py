"""The demo's terminal agent as a background process (pid and log in state_dir), as a reading
workstation would run ``slidestream terminal run``; ``slidestream down`` stops it."""

from __future__ import annotations

import sys
from pathlib import Path

from core.settings import Settings
from infra import process


def _paths(settings: Settings) -> tuple[Path, Path]:
    base = settings.state_dir.resolve() / "terminal"
    return base / "terminal.pid", base / "terminal.log"


def terminal_url(settings: Settings) -> str:
    return f"http://{settings.terminal.host}:{settings.terminal.port}/"


def start_terminal(settings: Settings, terminal_id: str, key_file: Path, *, wait_s: float = 60.0) -> int:
    """Start the terminal agent unless it runs; its pid once its loopback server answers (it
    forwards /health to the viewer: both are up then)."""
    pid_file, log = _paths(settings)
    server = f"http://{settings.viewer.host}:{settings.viewer.port}"
    argv = [sys.executable, "-m", "slidestream", "terminal", "run", "--id", terminal_id, "--key-file", str(key_file),
            "--server", server]
    return process.start_service("terminal agent", argv, pid_path=pid_file, log_path=log,
                                 host=settings.terminal.host, port=settings.terminal.port,
                                 port_setting="SLIDESTREAM_TERMINAL__PORT",
                                 health_url=terminal_url(settings) + "health", wait_s=wait_s)


def stop_terminal(settings: Settings) -> bool:
    return process.stop(_paths(settings)[0], grace_s=10.0) is not None
