"""Shared helpers for the benchmark tables."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.settings import Settings, get_settings


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


@contextmanager
def own_stack(prefix: str, env: Mapping[str, str]) -> Iterator[Settings]:
    """A bench's own stack: a fresh state directory, ``env`` (its ports and overrides) and a
    unique Faust app id in the environment, the servers up; down and removed afterwards."""
    from infra import stack

    state_dir = stack_state_dir(prefix)
    os.environ.update(env)
    os.environ["SLIDESTREAM_STATE_DIR"] = str(state_dir)
    os.environ["SLIDESTREAM_APP_ID"] = f"{prefix.rstrip('-')}-{uuid.uuid4().hex[:6]}"
    get_settings.cache_clear()
    settings = get_settings()
    try:
        stack.up(settings, echo=lambda _m: None)
        yield settings
    finally:
        stack.down(settings, echo=lambda _m: None)
        shutil.rmtree(state_dir, ignore_errors=True)
