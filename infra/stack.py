"""Start, stop and inspect the local stack (Kafka, MinIO, FerretDB) as one unit.

`up` is idempotent: healthy servers are left alone, missing ones are built (once) and started,
and if any fails to become healthy, the servers this `up` started are stopped again.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TextIO, TypeVar

from core.settings import Settings
from infra import process
from infra.bootstrap import BootstrapReport, bootstrap
from infra.build import Echo
from infra.errors import InfraError, StackStartError, StartFailure
from infra.ferretdb_server import FerretDBServer
from infra.kafka_broker import KafkaBroker
from infra.layout import Layout
from infra.minio_server import MinioServer
from infra.postgres_server import PostgresServer
from infra.server import Server

# PostgreSQL runs only on the catalog's postgresql backend (see catalog_server_names).
SERVER_TYPES: tuple[type[Server], ...] = (KafkaBroker, MinioServer, PostgresServer, FerretDBServer)
SERVER_NAMES: tuple[str, ...] = tuple(kind.name for kind in SERVER_TYPES)
# A cold Kafka start on two busy cores takes 10-30 s; the rest start in about a second.
DEFAULT_UP_TIMEOUT_S = 120.0
_POLL_S = 0.5
_LOG_TAIL_LINES = 30
T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run without touching the thread's current event loop (pytest-asyncio keeps one)."""
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(coroutine)


def echo_stderr(message: str) -> None:
    print(f"infra: {message}", file=sys.stderr, flush=True)


class State(str, Enum):
    HEALTHY = "healthy"  # our process, answering requests
    UNHEALTHY = "unhealthy"  # our process, not (yet) answering
    EXTERNAL = "external"  # answering, but not started by this state dir (left alone)
    STOPPED = "stopped"


@dataclass(frozen=True)
class ServerStatus:
    name: str
    address: str
    state: State
    pid: int | None
    log: Path

    @property
    def healthy(self) -> bool:
        return self.state in (State.HEALTHY, State.EXTERNAL)


@dataclass(frozen=True)
class UpResult:
    servers: tuple[ServerStatus, ...]
    started: tuple[str, ...]  # servers this call started
    bootstrap: BootstrapReport | None


def catalog_server_names(settings: Settings) -> list[str]:
    """The servers the catalog needs: FerretDB, and PostgreSQL under it on that backend."""
    return ["postgres", "ferretdb"] if settings.mongo.backend == "postgresql" else ["ferretdb"]


def make_servers(settings: Settings, names: Iterable[str] | None = None) -> list[Server]:
    wanted = list(names) if names else [
        name for name in SERVER_NAMES if name != "postgres" or settings.mongo.backend == "postgresql"]
    unknown = sorted(set(wanted) - set(SERVER_NAMES))
    if unknown:
        raise InfraError(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVER_NAMES)}")
    layout = Layout.from_settings(settings)
    return [kind(settings, layout) for kind in SERVER_TYPES if kind.name in wanted]


async def inspect(server: Server) -> ServerStatus:
    record = process.running_record(server.pid_file)
    answering = await server.ready()
    if record is not None:
        state = State.HEALTHY if answering else State.UNHEALTHY
    else:
        state = State.EXTERNAL if answering else State.STOPPED
    return ServerStatus(server.name, server.address, state, record.pid if record else None, server.log_file)


async def stack_status_async(settings: Settings, names: Iterable[str] | None = None) -> list[ServerStatus]:
    return list(await asyncio.gather(*(inspect(server) for server in make_servers(settings, names))))


def stack_status(settings: Settings, names: Iterable[str] | None = None) -> list[ServerStatus]:
    return _run(stack_status_async(settings, names))


def build(settings: Settings, names: Iterable[str] | None = None, echo: Echo = echo_stderr) -> None:
    """Provision every server's program into the build cache (nothing to do when current)."""
    for server in make_servers(settings, names):
        server.build(echo)


async def up_async(settings: Settings, names: Iterable[str] | None = None, *,
                   timeout_s: float = DEFAULT_UP_TIMEOUT_S, run_bootstrap: bool = True,
                   echo: Echo = echo_stderr) -> UpResult:
    servers = make_servers(settings, names)
    before = {status.name: status for status in await asyncio.gather(*(inspect(s) for s in servers))}
    to_start = [s for s in servers if before[s.name].state is State.STOPPED]
    for server in servers:
        if before[server.name].healthy:
            echo(f"{server.name} already {before[server.name].state.value} at {server.address}")

    # Build everything first, so a failing build leaves nothing half-started.
    for server in to_start:
        await asyncio.to_thread(server.build, echo)

    started: list[Server] = []
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for server in to_start:
            try:
                await asyncio.to_thread(server.prepare, echo)
            except Exception as exc:  # noqa: BLE001 - reported as this server's start failure
                raise StackStartError([_failure(server, f"preparing failed: {exc}")],
                                      _stop_all(started, echo)) from exc
            echo(f"starting {server.name} on {server.address}")
            children[server.name] = process.spawn(server.argv(), log_path=server.log_file,
                                                  pid_path=server.pid_file, env=server.env(),
                                                  user=server.run_as())
            started.append(server)

        waiting = [s for s in servers if before[s.name].state in (State.STOPPED, State.UNHEALTHY)]
        failures = await _await_healthy(waiting, children, timeout_s)
        if failures:
            raise StackStartError(failures, _stop_all(started, echo))
    except StackStartError:
        raise
    except BaseException:  # Ctrl-C, cancellation, spawn errors: leave nothing half-running
        _stop_all(started, echo)
        raise
    for server in waiting:
        echo(f"{server.name} healthy at {server.address}")

    report = None
    if run_bootstrap:
        report = await bootstrap(settings, parts=[s.name for s in servers], echo=echo)
    statuses = await asyncio.gather(*(inspect(s) for s in servers))
    return UpResult(tuple(statuses), tuple(s.name for s in started), report)


def up(settings: Settings, names: Iterable[str] | None = None, *,
       timeout_s: float = DEFAULT_UP_TIMEOUT_S, run_bootstrap: bool = True,
       echo: Echo = echo_stderr) -> UpResult:
    return _run(up_async(settings, names, timeout_s=timeout_s, run_bootstrap=run_bootstrap, echo=echo))


async def _await_healthy(servers: Sequence[Server], children: dict[str, subprocess.Popen[bytes]],
                         timeout_s: float) -> list[StartFailure]:
    """Wait until every server answers; stop at the first one that dies or times out."""
    if not servers:
        return []
    deadline = time.monotonic() + timeout_s
    tasks = [asyncio.create_task(_wait_one(s, children.get(s.name), deadline, timeout_s)) for s in servers]
    try:
        for next_done in asyncio.as_completed(tasks):
            failure = await next_done
            if failure is not None:
                return [failure]
        return []
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _wait_one(server: Server, child: subprocess.Popen[bytes] | None, deadline: float,
                    timeout_s: float) -> StartFailure | None:
    while True:
        if child is not None:
            code = child.poll()
            if code is not None:
                return _failure(server, f"exited with status {code}{_port_diagnosis(server)}")
        elif process.running_record(server.pid_file) is None:
            return _failure(server, "its process exited")
        if await server.ready():
            return None
        if time.monotonic() > deadline:
            return _failure(server, f"not healthy after {timeout_s:.0f} s")
        await asyncio.sleep(_POLL_S)


def _port_diagnosis(server: Server) -> str:
    taken = [port for port in server.bound_ports() if process.port_taken(server.host, port)]
    if not taken:
        return ""
    where = ", ".join(f"{server.host}:{port}" for port in taken)
    return f" ({where} already in use by another process)"


def _failure(server: Server, reason: str) -> StartFailure:
    return StartFailure(server.name, reason, str(server.log_file), process.tail(server.log_file, _LOG_TAIL_LINES))


def _stop_all(servers: Sequence[Server], echo: Echo) -> list[str]:
    stopped = []
    for server in reversed(servers):
        outcome = process.stop(server.pid_file, grace_s=server.stop_grace_s)
        if outcome is None:
            continue
        if outcome.killed:
            echo(f"{server.name} ignored SIGTERM for {server.stop_grace_s:.0f} s; killed it")
        else:
            echo(f"stopped {server.name}")
        stopped.append(server.name)
    return stopped


def down(settings: Settings, names: Iterable[str] | None = None, echo: Echo = echo_stderr) -> list[str]:
    """Stop our servers gracefully (SIGTERM, then SIGKILL after a grace period)."""
    stopped = _stop_all(make_servers(settings, names), echo)
    if not stopped:
        echo("no servers were running")
    return stopped


def format_status(statuses: Sequence[ServerStatus]) -> str:
    rows = [("server", "state", "pid", "address", "log")]
    rows += [(s.name, s.state.value, str(s.pid or "-"), s.address, str(s.log)) for s in statuses]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows
    )


def status(settings: Settings, names: Iterable[str] | None = None, file: TextIO | None = None) -> bool:
    """Print a table of the servers; True when every one answers requests."""
    statuses = stack_status(settings, names)
    print(format_status(statuses), file=file or sys.stdout)
    return all(s.healthy for s in statuses)


def logs(settings: Settings, server: str, lines: int = 50) -> str:
    (chosen,) = make_servers(settings, [server])
    return process.tail(chosen.log_file, lines)
