"""``slidestream terminal run``: the terminal agent on a reading workstation (downloads the
assigned exams' HR tiles, serves the browser on loopback)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from core.settings import Settings


def _run(settings: Callable[[], Settings]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from core.logging import configure_logging
        from terminal.runner import KeyFileError, SyncError, build, options, read_key_file, run_forever, run_once

        config = settings()
        configure_logging(config)
        try:
            key = read_key_file(args.key_file)
        except KeyFileError as exc:
            print(f"slidestream terminal run: {exc}", file=sys.stderr)
            return 1
        opts = options(config, args.terminal_id, args.key_file, server=args.server, cache_dir=args.cache_dir,
                       port=args.port)
        syncer = build(opts, config.terminal, key)
        if args.once:
            try:
                asyncio.run(run_once(syncer, args.timeout))
            except SyncError as exc:
                print(f"slidestream terminal run --once: {exc}", file=sys.stderr)
                return 1
            print(f"terminal {opts.terminal_id}: every assigned exam is complete locally", file=sys.stderr)
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_forever(syncer, opts))
        return 0

    return run


def add_agent_commands(sub: argparse._SubParsersAction, settings: Callable[[], Settings]) -> None:  # noqa: SLF001 - argparse exposes no public type
    p = sub.add_parser("run", help="run the terminal agent on a reading workstation: download the assigned exams' "
                                   "40x tiles and serve the browser on loopback (high-resolution reading mode)")
    p.add_argument("--id", dest="terminal_id", required=True, help="this terminal's ID (from `terminal register`)")
    p.add_argument("--key-file", type=Path, required=True, help="file holding this terminal's key (mode 0600, yours)")
    p.add_argument("--server", help="the diagnosis server's URL (default: settings terminal.server_url)")
    p.add_argument("--cache-dir", type=Path, help="local tile cache (default: settings terminal.cache_dir)")
    p.add_argument("--port", type=int, help="loopback port for the browser (default: settings terminal.port)")
    p.add_argument("--once", action="store_true",
                   help="sync until every assigned exam is complete locally, then exit (0: complete, 1: error)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="with --once: give up after this long with the exams and tiles still missing (default: wait)")
    p.set_defaults(func=_run(settings))
