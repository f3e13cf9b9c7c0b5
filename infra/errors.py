"""Errors raised by infra/, each naming the server or build step that failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class InfraError(RuntimeError):
    """Base class: something about the local servers went wrong."""


class BuildError(InfraError):
    def __init__(self, what: str, reason: str, log_tail: str = "") -> None:
        self.what = what
        self.reason = reason
        self.log_tail = log_tail
        message = f"building {what} failed: {reason}"
        if log_tail:
            message += f"\n--- end of build log ---\n{log_tail}"
        super().__init__(message)


@dataclass(frozen=True)
class StartFailure:
    server: str
    reason: str
    log_path: str
    log_tail: str

    def describe(self) -> str:
        text = f"{self.server} failed to start: {self.reason}"
        if self.log_tail:
            text += f"\n--- last lines of {self.log_path} ---\n{self.log_tail}"
        return text


class StackStartError(InfraError):
    """One or more servers did not become healthy; `stopped` lists what this `up` cleaned up."""

    def __init__(self, failures: Sequence[StartFailure], stopped: Sequence[str]) -> None:
        self.failures = tuple(failures)
        self.stopped = tuple(stopped)
        parts = [failure.describe() for failure in self.failures]
        if self.stopped:
            parts.append(f"stopped the servers this run had started: {', '.join(self.stopped)}")
        super().__init__("\n".join(parts))

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(failure.server for failure in self.failures)


class BootstrapError(InfraError):
    """Topics, buckets or indexes could not be created."""
