"""Test-session settings and the real stack shared by tests/integration and tests/security.

The `stack` fixture runs Kafka, MinIO and FerretDB (built by infra/, cached across sessions)
on ports that do not clash with a developer's running stack, with state in a temp directory,
bootstraps topics, buckets and indexes, and exports SLIDESTREAM_* so that code calling
`get_settings()` in this process (or in processes it spawns) sees the test stack. One session
fixture for both directories: tests/security runs after tests/integration on the same stack
(its PHI scan reads the logs of the whole suite).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings, get_settings
from infra import stack as local_stack
from slidestream.workers import stop_workers

# SLIDESTREAM_TEST_PORT_BASE=N moves the integration stack to ports N..N+4. It is removed from
# the environment here, before anything builds Settings: the strict Settings reject unknown
# SLIDESTREAM_* variables, and this one is the test harness's, not the application's.
TEST_PORT_BASE = os.environ.pop("SLIDESTREAM_TEST_PORT_BASE", None)


# Ports of the test stack: the development stack uses 19092/19093, 19000/19001 and 27117.
# SLIDESTREAM_TEST_PORT_BASE=N moves the whole test stack to N..N+5 (and its own state dir),
# so several test sessions can run side by side on one machine.
PORT_BASE = TEST_PORT_BASE
_PORT_NAMES = ("SLIDESTREAM_KAFKA__PORT", "SLIDESTREAM_KAFKA__CONTROLLER_PORT", "SLIDESTREAM_STORAGE__PORT",
               "SLIDESTREAM_STORAGE__CONSOLE_PORT", "SLIDESTREAM_MONGO__PORT", "SLIDESTREAM_MONGO__POSTGRES_PORT")
TEST_PORTS = (
    {name: int(PORT_BASE) + offset for offset, name in enumerate(_PORT_NAMES)}
    if PORT_BASE
    else dict(zip(_PORT_NAMES, (29092, 29093, 29000, 29001, 27217, 27218)))
)
# A cold Kafka start on a busy two-core machine can take a while; builds are not counted.
START_TIMEOUT_S = 180.0


def _state_dir() -> Path:
    # A fixed name (per user) rather than a random one: if a session is killed before its
    # teardown, the next session finds the leftover pid files here and stops those servers.
    return Path(tempfile.gettempdir()) / f"slidestream-it-{os.getuid()}-{PORT_BASE or 'default'}"


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    state_dir = _state_dir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLIDESTREAM_STATE_DIR", str(state_dir))
        for name, port in TEST_PORTS.items():
            env.setenv(name, str(port))
        get_settings.cache_clear()
        settings = get_settings()
        try:
            stop_workers(settings)  # leftovers of a killed session
            local_stack.down(settings, echo=lambda _: None)
            shutil.rmtree(state_dir, ignore_errors=True)
            local_stack.up(settings, timeout_s=START_TIMEOUT_S)
            yield settings
        finally:
            stop_workers(settings)
            local_stack.down(settings)
            shutil.rmtree(state_dir, ignore_errors=True)
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def agent_worker(stack: Settings) -> Iterator[Settings]:
    """One real Faust worker process (all agents) on the test stack, answering probes.

    Module-scoped: a worker left running would also consume the events of later test modules
    that run their own workers (in their own consumer groups) and expect to be the only ones.
    """
    import asyncio

    from slidestream.probe import probe_agents
    from slidestream.workers import start_workers, stop_workers

    start_workers(stack, count=1)
    try:
        asyncio.run(probe_agents(stack, timeout=START_TIMEOUT_S))
        yield stack
    finally:
        stop_workers(stack)
