"""Fixtures shared by the unit tests."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from core.logging import configure_logging
from core.settings import Settings


@pytest.fixture
def capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Configure logging into a buffer; restore the previous root handlers afterwards. The
    install's own salt is made in a temporary state directory."""
    monkeypatch.setenv("SLIDESTREAM_STATE_DIR", str(tmp_path / "state"))
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    configure_logging(Settings(log_level="debug"), stream=buffer)
    yield buffer
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    structlog.reset_defaults()
