"""infra.process with real (tiny) child processes: pid files, stopping, stale records, ports."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from infra import process

# The marker is printed as 'up' + 'right' so that it does not appear in the log's header line
# (which repeats the command line) before the program has actually run.
MARKER = "upright"
SLEEPER = [sys.executable, "-c", "import time; print('up' + 'right', flush=True); time.sleep(300)"]
# Ignores SIGTERM, so only the SIGKILL after the grace period ends it.
STUBBORN = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up' + 'right', flush=True); time.sleep(300)"]


def _wait_for_output(log: Path, text: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in process.tail(log):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {log}"
        time.sleep(0.05)


def test_spawned_process_is_recorded_and_stopped(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "logs" / "s.log", tmp_path / "run" / "s.pid"
    child = process.spawn(SLEEPER, log_path=log, pid_path=pid_file)
    _wait_for_output(log, MARKER)

    record = process.running_record(pid_file)
    assert record is not None and record.pid == child.pid and list(record.argv) == SLEEPER

    stopped = process.stop(pid_file, grace_s=10)
    assert stopped is not None and stopped.record.pid == child.pid and not stopped.killed
    assert child.poll() is not None or not process.is_alive(child.pid)
    assert not pid_file.exists()
    assert process.stop(pid_file) is None  # nothing left to stop


def test_process_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "s.log", tmp_path / "s.pid"
    child = process.spawn(STUBBORN, log_path=log, pid_path=pid_file)
    _wait_for_output(log, MARKER)

    stopped = process.stop(pid_file, grace_s=0.5)
    assert stopped is not None and stopped.killed
    assert not process.is_alive(child.pid)


def test_stale_pid_file_of_an_exited_process_is_removed(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "s.log", tmp_path / "s.pid"
    child = process.spawn([sys.executable, "-c", "pass"], log_path=log, pid_path=pid_file)
    child.wait(timeout=20)

    assert process.running_record(pid_file) is None
    assert not pid_file.exists()


def test_recycled_pid_running_another_program_is_never_signalled(tmp_path: Path) -> None:
    # A pid file naming *this* test process with a different command line: the pid was reused.
    pid_file = tmp_path / "s.pid"
    pid_file.write_text(json.dumps({"pid": os.getpid(), "argv": ["/opt/old/server"], "started_at": "x"}))

    assert process.running_record(pid_file) is None
    assert process.stop(pid_file, grace_s=0.1) is None  # and we are still alive to assert this
    assert not pid_file.exists()


def test_unreadable_pid_file_counts_as_not_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "s.pid"
    pid_file.write_text("not json")
    assert process.running_record(pid_file) is None
    assert not pid_file.exists()


def test_output_is_appended_to_the_log_across_starts(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "s.log", tmp_path / "s.pid"
    for word in ("first", "second"):
        process.spawn([sys.executable, "-c", f"print({word!r})"], log_path=log, pid_path=pid_file).wait(timeout=20)
    text = log.read_text()
    assert text.index("first") < text.index("second")
    assert text.count("===== ") == 2


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert process.tail(log, 3).splitlines() == ["line 97", "line 98", "line 99"]
    assert process.tail(tmp_path / "missing.log") == ""


def test_port_taken_sees_a_bound_socket() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert process.port_taken("127.0.0.1", port)
    assert not process.port_taken("127.0.0.1", port)
