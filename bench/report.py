"""Shared helpers for the benchmark tables."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence

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
