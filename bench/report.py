"""Shared helpers for the benchmark tables."""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 95)) -> list[float]:
    return [float(np.percentile(np.asarray(values, dtype=float), p)) for p in points]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(value: object) -> str:
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def stack_state_dir(prefix: str) -> Path:
    """A fresh state directory for a bench's own stack. Readable by others (0755): the
    catalog's PostgreSQL runs as its own system user when infra runs as root
    (infra.postgres_server), and it must reach its data directory below this one."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path
