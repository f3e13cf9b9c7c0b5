"""Run build tools (mvn, go) with logged output, and skip builds whose inputs did not change.

Each artefact has a stamp file next to it holding a digest of everything that went into it
(versions, source files, flags); a second build with the same digest does nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from infra.errors import BuildError
from infra.process import tail

Echo = Callable[[str], None]


def digest(parts: Iterable[str | bytes | Path]) -> str:
    """sha256 over strings, bytes and file contents, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(part.name.encode())
            h.update(part.read_bytes())
        elif isinstance(part, str):
            h.update(part.encode())
        else:
            h.update(part)
        h.update(b"\0")
    return h.hexdigest()


def stamp_path(artefact: Path) -> Path:
    return artefact.with_name(artefact.name + ".stamp")


def is_current(artefact: Path, key: str) -> bool:
    stamp = stamp_path(artefact)
    return artefact.exists() and stamp.exists() and stamp.read_text().strip() == key


def mark_current(artefact: Path, key: str) -> None:
    stamp_path(artefact).write_text(key + "\n")


def require_tool(tool: str, what: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BuildError(what, f"`{tool}` is not on PATH ({hint})")
    return path


def run_logged(argv: Sequence[str], *, what: str, log_path: Path, echo: Echo,
               cwd: Path | None = None, env: Mapping[str, str] | None = None) -> float:
    """Run a build command, output to `log_path`; raise BuildError with the log's tail on failure.

    Returns the seconds it took.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    echo(f"building {what}: {' '.join(argv)} (log: {log_path})")
    start = time.monotonic()
    with open(log_path, "wb") as log:
        result = subprocess.run(list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise BuildError(what, f"exit status {result.returncode}", tail(log_path, 30))
    echo(f"built {what} in {seconds:.0f} s")
    return seconds
