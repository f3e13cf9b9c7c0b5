"""Background server processes: spawn detached with a pid file and a log, check, stop.

A pid file records the pid and the exact argv, so a recycled pid that now belongs to some
other program is never mistaken for our server (and never signalled).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    argv: tuple[str, ...]
    started_at: str


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (0700), made or tightened: server data,
    logs and pid files may hold patient data. Missing parents keep the default mode, so that a
    server run as another system user (PostgreSQL under root) can still reach its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def spawn(argv: Sequence[str], *, log_path: Path, pid_path: Path,
          env: Mapping[str, str] | None = None, cwd: Path | None = None,
          user: str | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (it outlives the caller), output appended to `log_path`;
    as system user `user` (and its group) when given (needs root)."""
    private_dir(log_path.parent)
    private_dir(pid_path.parent)
    full_env = {**os.environ, **(env or {})}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        log.write(f"\n===== {started} starting: {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=full_env, cwd=cwd, start_new_session=True,
            user=user, group=user, extra_groups=[] if user else None,
        )
    record = {"pid": process.pid, "argv": list(argv), "started_at": started}
    tmp = pid_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(pid_path)
    return process


def read_record(pid_path: Path) -> ProcessRecord | None:
    try:
        data = json.loads(pid_path.read_text())
        return ProcessRecord(int(data["pid"]), tuple(data["argv"]), str(data["started_at"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable pid file: treat as absent; running_record() removes it


def _reap_if_child(pid: int) -> bool:
    """True when `pid` was our child and has exited (reaping it so it is not a zombie)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def is_alive(pid: int) -> bool:
    if _reap_if_child(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie that is not our child still answers kill(0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _argv_of(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None  # no /proc (not Linux) or process gone
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def owns(record: ProcessRecord) -> bool:
    """Is the recorded process still alive and still running the recorded command?"""
    if not is_alive(record.pid):
        return False
    argv = _argv_of(record.pid)
    return argv is None or argv == record.argv


def running_record(pid_path: Path) -> ProcessRecord | None:
    """The live process behind `pid_path`; a stale or unreadable pid file is removed."""
    if not pid_path.exists():
        return None
    record = read_record(pid_path)
    if record is not None and owns(record):
        return record
    pid_path.unlink(missing_ok=True)
    return None


@dataclass(frozen=True)
class Stopped:
    record: ProcessRecord
    killed: bool  # True when it ignored SIGTERM for the whole grace period


def stop(pid_path: Path, *, grace_s: float = 20.0) -> Stopped | None:
    """SIGTERM the recorded process, wait up to `grace_s`, then SIGKILL. None if none was running."""
    record = running_record(pid_path)
    if record is None:
        return None
    _signal(record.pid, signal.SIGTERM)
    killed = not _wait_exit(record.pid, grace_s)
    if killed:
        _signal(record.pid, signal.SIGKILL)
        _wait_exit(record.pid, 10.0)
    pid_path.unlink(missing_ok=True)
    return Stopped(record, killed)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        # spawn() made the server a session (and group) leader: signal the group so any
        # helper processes it forked go too.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.1)
    return not is_alive(pid)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def port_taken(host: str, port: int) -> bool:
    """Can nobody else bind host:port right now? (Diagnostic for a server that failed to start.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR ignores our own lingering TIME_WAIT connections: only a socket that is
        # bound or listening counts as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def answers_health(url: str, timeout_s: float = 2.0) -> bool:
    """Does ``url`` (a loopback service's health endpoint) answer 200?"""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310 - our own loopback URL
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_service(name: str, argv: Sequence[str], *, pid_path: Path, log_path: Path, host: str, port: int,
                  port_setting: str, health_url: str, env: Mapping[str, str] | None = None,
                  wait_s: float = 60.0) -> int:
    """Start a background service unless its pid file names a running one; its pid once
    ``health_url`` answers. A port held by another program, an exit at start or no answer
    within ``wait_s`` is a RuntimeError naming the service and its log."""
    record = running_record(pid_path)
    if record is None:
        if port_taken(host, port):
            raise RuntimeError(f"port {port} is taken by another program; set {port_setting}")
        pid = spawn(argv, log_path=log_path, pid_path=pid_path, env=env).pid
    else:
        pid = record.pid
    deadline = time.monotonic() + wait_s
    while not answers_health(health_url):
        if running_record(pid_path) is None:
            raise RuntimeError(f"the {name} exited at start; see {log_path}:\n{tail(log_path, 20)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {name} did not answer within {wait_s:.0f} s; see {log_path}")
        time.sleep(0.3)
    return pid
