"""`slidestream` command line: run the stack, inspect it, run the demo, train and evaluate models."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from core.settings import Settings, get_settings


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:  # pydantic's message names the bad variable; show only that
        print(f"slidestream: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_up(args: argparse.Namespace) -> int:
    from infra.stack import up
    from slidestream.probe import probe_agents
    from slidestream.workers import start_workers

    settings = _settings()
    up(settings)
    workers = start_workers(settings, count=args.workers)
    print(f"agents: {len(workers)} worker(s), logs in {workers[0].log.parent}")
    result = asyncio.run(probe_agents(settings, timeout=args.timeout))
    print(f"agents answer: worker {result.worker} in {result.round_trip_ms:.0f} ms")
    if not args.no_viewer:
        from slidestream.viewer_process import start_viewer, viewer_url

        start_viewer(settings)
        print(f"viewer: {viewer_url(settings)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from infra.stack import down
    from slidestream.terminal_process import stop_terminal
    from slidestream.viewer_process import stop_viewer
    from slidestream.workers import stop_workers

    settings = _settings()
    if stop_terminal(settings):
        print("stopped the terminal agent")
    if stop_viewer(settings):
        print("stopped the viewer")
    print(f"stopped {stop_workers(settings)} worker(s)")
    down(settings)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from slidestream.probe import probe_agents

    settings = _settings()
    healthy = True
    if not args.probe_only:
        from infra.stack import status
        from slidestream.workers import worker_status

        healthy = status(settings)
        for info in worker_status(settings):
            print(f"worker-{info.index}: pid {info.pid} running (log {info.log})")
        from slidestream.viewer_process import healthy as viewer_healthy
        from slidestream.viewer_process import viewer_pid, viewer_url

        pid = viewer_pid(settings)
        if viewer_healthy(settings):
            print(f"viewer: {viewer_url(settings)} answers" + (f" (pid {pid})" if pid else " (external)"))
        elif pid is not None:
            print(f"viewer: pid {pid} runs but {viewer_url(settings)}health does not answer")
            healthy = False
        else:
            print("viewer: not running (`slidestream up` starts it)")
    try:
        result = asyncio.run(probe_agents(settings, timeout=args.timeout))
        print(f"agents: answered by {result.worker} in {result.round_trip_ms:.0f} ms")
    except Exception as exc:  # noqa: BLE001 - report any failure of the round trip
        print(f"agents: no answer ({type(exc).__name__}: {exc})")
        healthy = False
    return 0 if healthy else 1


def cmd_logs(args: argparse.Namespace) -> int:
    from infra.stack import logs

    print(logs(_settings(), args.service, lines=args.lines))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from slidestream.demo import run_demo

    return run_demo(_settings(), stop_after=args.stop)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slidestream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="start Kafka, MinIO, FerretDB, bootstrap them, start agent workers")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-viewer", action="store_true", help="do not start the viewer")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the agents to answer")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop the agent workers and the servers")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="health of each server and of the agents (probe round trip)")
    p.add_argument("--probe-only", action="store_true", help="only check that an agent answers")
    p.add_argument("--timeout", type=float, default=15.0)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", help="tail of a server's log")
    p.add_argument("service", choices=["kafka", "minio", "ferretdb"])
    p.add_argument("--lines", type=int, default=50)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("demo", help="start the stack and run sample slides through it")
    p.add_argument("--stop", action="store_true", help="stop the stack afterwards (default: leave it up)")
    p.set_defaults(func=cmd_demo)

    from slidestream.commands.scanner import add_commands as add_scanner_commands

    add_scanner_commands(sub, _settings)  # ingest, watch

    from slidestream.commands.export import add_commands as add_storage_commands
    from slidestream.commands.his import add_commands as add_his_commands

    add_storage_commands(sub, _settings)  # export
    add_his_commands(sub, _settings)  # his

    from slidestream.commands.operator import add_commands as add_operator_commands

    add_operator_commands(sub, _settings)  # slide, dead-letters

    from slidestream.commands.viewer import add_commands as add_viewer_commands

    add_viewer_commands(sub, _settings)  # viewer, user add, assign

    from slidestream.commands.terminal import add_commands as add_terminal_commands

    add_terminal_commands(sub, _settings)  # terminal register/list/retire/rotate-key/run

    # Listed for --help only; main() hands their arguments to model_zoo before parsing.
    sub.add_parser("train", help="train a super-resolution model (slidestream train --help)", add_help=False)
    sub.add_parser("evaluate", help="evaluate SR models against interpolation (slidestream evaluate --help)",
                   add_help=False)
    return parser


# Subcommands that hand their whole argument list to another tool's own parser (argparse's
# REMAINDER cannot pass on a leading option such as --help).
DELEGATED = {"train": "model_zoo.train", "evaluate": "model_zoo.evaluate"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        return int(importlib.import_module(DELEGATED[argv[0]]).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
