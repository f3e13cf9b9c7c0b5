"""Where each server's data, logs, pid file and built artefacts live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings


@dataclass(frozen=True)
class Layout:
    state_dir: Path  # data, logs and pid files of one stack
    build_cache: Path  # built servers, shared by every stack of this user

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        # Absolute paths: servers run detached and must not depend on the caller's cwd.
        return cls(settings.state_dir.expanduser().resolve(), settings.build_cache.expanduser().resolve())

    def data_dir(self, server: str) -> Path:
        return self.state_dir / server

    def pid_file(self, server: str) -> Path:
        return self.state_dir / "run" / f"{server}.pid"

    def log_file(self, server: str) -> Path:
        return self.state_dir / "logs" / f"{server}.log"

    @property
    def bin_dir(self) -> Path:
        return self.build_cache / "bin"

    def build_log(self, what: str) -> Path:
        return self.build_cache / "logs" / f"build-{what}.log"
