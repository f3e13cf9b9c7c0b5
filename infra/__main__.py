"""`python -m infra up|down|status|logs|build|bootstrap [server ...]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence

from core.settings import Settings, get_settings
from infra import stack
from infra.bootstrap import bootstrap
from infra.errors import InfraError


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:  # pydantic names the offending variable
        print(f"infra: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _servers_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("servers", nargs="*", metavar="server",
                        help=f"any of {', '.join(stack.SERVER_NAMES)} (default: all)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="build if needed, start, wait for health, bootstrap")
    _servers_arg(p)
    p.add_argument("--timeout", type=float, default=stack.DEFAULT_UP_TIMEOUT_S,
                   help="seconds to wait for the servers to answer")
    p.add_argument("--no-bootstrap", action="store_true", help="skip creating topics, buckets and indexes")

    p = sub.add_parser("down", help="stop the servers (SIGTERM, then SIGKILL)")
    _servers_arg(p)

    p = sub.add_parser("status", help="each server's state, pid, address and log")
    _servers_arg(p)

    p = sub.add_parser("logs", help="tail of a server's log")
    p.add_argument("server", choices=stack.SERVER_NAMES)
    p.add_argument("-n", "--lines", type=int, default=50)

    p = sub.add_parser("build", help="build the servers into the cache (no-op when current)")
    _servers_arg(p)

    p = sub.add_parser("bootstrap", help="create topics, buckets and indexes on running servers")
    _servers_arg(p)
    return parser


def run(args: argparse.Namespace) -> int:
    settings = _settings()
    servers = getattr(args, "servers", None) or None
    if args.command == "up":
        start = time.monotonic()
        result = stack.up(settings, servers, timeout_s=args.timeout, run_bootstrap=not args.no_bootstrap)
        print(stack.format_status(result.servers))
        print(f"up in {time.monotonic() - start:.1f} s", file=sys.stderr)
        return 0 if all(s.healthy for s in result.servers) else 1
    if args.command == "down":
        stack.down(settings, servers)
        return 0
    if args.command == "status":
        return 0 if stack.status(settings, servers) else 1
    if args.command == "logs":
        print(stack.logs(settings, args.server, args.lines))
        return 0
    if args.command == "build":
        stack.build(settings, servers)
        return 0
    if args.command == "bootstrap":
        asyncio.run(bootstrap(settings, servers or stack.SERVER_NAMES, echo=stack.echo_stderr))
        return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InfraError as exc:
        print(f"infra: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
