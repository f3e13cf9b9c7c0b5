"""What every locally run server provides to the stack: build, prepare, command line, probe."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from core.settings import Settings
from infra.build import Echo
from infra.layout import Layout
from infra.process import private_dir


class Server(ABC):
    name: ClassVar[str]
    # Seconds between SIGTERM and SIGKILL on `down`.
    stop_grace_s: ClassVar[float] = 20.0

    def __init__(self, settings: Settings, layout: Layout) -> None:
        self.settings = settings
        self.layout = layout

    @property
    @abstractmethod
    def host(self) -> str: ...

    @property
    @abstractmethod
    def port(self) -> int:
        """The port clients use."""

    def bound_ports(self) -> tuple[int, ...]:
        """Every port the server listens on (for diagnosing a taken port)."""
        return (self.port,)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.layout.data_dir(self.name)

    @property
    def log_file(self) -> Path:
        return self.layout.log_file(self.name)

    @property
    def pid_file(self) -> Path:
        return self.layout.pid_file(self.name)

    @abstractmethod
    def build(self, echo: Echo) -> None:
        """Provision the server's program into the build cache; a no-op when already current."""

    def prepare(self, echo: Echo) -> None:
        """Write configuration and initialise storage before a start (idempotent). The data
        directory is the owner's alone (0700): it holds patient data."""
        private_dir(self.data_dir)

    @abstractmethod
    def argv(self) -> list[str]: ...

    def env(self) -> dict[str, str]:
        return {}

    def run_as(self) -> str | None:
        """System user to run the server as (None: the caller's own)."""
        return None

    @abstractmethod
    async def ready(self) -> bool:
        """A real request succeeds."""
