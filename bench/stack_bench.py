"""Stack start times and the Kafka round trip through a Faust agent.

    python -m bench.stack_bench [--messages 300]

Runs its own stack (ports 39092.., state in a temp dir) so a running dev stack is untouched.
Cold = empty data directories (Kafka storage formatted, buckets/topics/indexes created);
warm = restart on existing data. Server builds are cached and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from pathlib import Path

from bench.report import machine, percentiles, stack_state_dir, table
from core.settings import Settings, get_settings
from infra import stack
from slidestream.probe import probe_agents, probe_many
from slidestream.workers import start_workers, stop_workers

PORTS = {
    "SLIDESTREAM_KAFKA__PORT": "39092",
    "SLIDESTREAM_KAFKA__CONTROLLER_PORT": "39093",
    "SLIDESTREAM_STORAGE__PORT": "39000",
    "SLIDESTREAM_STORAGE__CONSOLE_PORT": "39001",
    "SLIDESTREAM_MONGO__PORT": "39017",
}


def _bench_settings(state_dir: Path) -> Settings:
    os.environ.update(PORTS)
    os.environ["SLIDESTREAM_STATE_DIR"] = str(state_dir)
    get_settings.cache_clear()
    return get_settings()


def _timed_start(settings: Settings) -> tuple[float, float]:
    """Seconds until the servers are healthy and bootstrapped, then until an agent answers."""

    def quiet(_msg: str) -> None:
        pass

    t0 = time.perf_counter()
    stack.up(settings, echo=quiet)
    servers_s = time.perf_counter() - t0
    start_workers(settings, count=1)
    asyncio.run(probe_agents(settings, timeout=180))
    return servers_s, time.perf_counter() - t0


def _stop(settings: Settings) -> None:
    stop_workers(settings)
    stack.down(settings, echo=lambda _msg: None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args(argv)
    stack.build(get_settings())  # make sure nothing below includes build time
    state_dir = stack_state_dir("slidestream-bench-")
    settings = _bench_settings(state_dir)
    try:
        cold = _timed_start(settings)
        _stop(settings)
        warm = _timed_start(settings)
        asyncio.run(probe_many(settings, 20))  # warm-up: connections, metadata, JIT of the worker
        results = asyncio.run(probe_many(settings, args.messages))
    finally:
        _stop(settings)
        shutil.rmtree(state_dir, ignore_errors=True)
    p50, p95 = percentiles([r.round_trip_ms for r in results])
    print(f"Stack start ({machine()})\n")
    print(table(["start", "servers healthy + bootstrapped (s)", "first agent answer (s)"],
                [["cold (empty data dirs)", cold[0], cold[1]], ["warm (existing data)", warm[0], warm[1]]]))
    print(f"\nKafka round trip produce -> Faust agent -> produce -> consume, {len(results)} messages\n")
    print(table(["p50 (ms)", "p95 (ms)", "max (ms)"],
                [[p50, p95, max(r.round_trip_ms for r in results)]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
