"""``slidestream terminal register | list | retire | rotate-key``: the operator's side of the
reading-terminal registry (SPEC 2, distribution).

A terminal's key is made here (256 random bits), shown once (or written to a 0600 file) and
kept in the catalog only as its SHA-256 digest: a lost key is replaced, never recovered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import Settings

USAGE_ERROR = 2


class CommandError(Exception):
    """A clear, expected refusal (exit code 2)."""


def _task_classes(text: str) -> list[str]:
    classes = [part.strip() for part in text.split(",") if part.strip()]
    if not classes:
        raise argparse.ArgumentTypeError("give at least one task class, e.g. gi,general")
    return classes


def write_key_file(path: Path, key: str) -> None:
    """The key alone in a new file only its owner can read (an existing file is not overwritten:
    it may be another terminal's key)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandError(f"{path} exists already; give a new file for the key") from None
    except OSError as exc:
        raise CommandError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")


def _hand_over(key: str, key_file: Path | None, terminal_id: str) -> None:
    if key_file is None:
        print(key)
        print(f"the key of terminal {terminal_id}, shown this once: configure it on the terminal "
              "(only its digest is kept here)", file=sys.stderr)
    else:
        write_key_file(key_file, key)
        print(f"the key of terminal {terminal_id} is in {key_file} (mode 0600); move it to the terminal "
              "and delete it here", file=sys.stderr)


async def _with_catalog(settings: Settings, work: Callable[[Any], Awaitable[int]]) -> int:
    from catalog.db import connect, database

    client = connect(settings.mongo)
    try:
        return await work(database(client, settings.mongo))
    finally:
        await client.close()


async def register(settings: Settings, args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from catalog.terminals import TerminalExists, Terminals
    from core.secrets import key_digest, new_key
    from schemas.catalog import TerminalRecord

    owner_kind, owner = ("user", args.owner_user) if args.owner_user else ("department", args.owner_department)
    key = new_key()
    try:
        record = TerminalRecord(terminal_id=args.id, task_classes=args.task_classes, capacity_per_day=args.capacity,
                                owner_kind=owner_kind, owner=owner, key_digest=key_digest(key))
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}))
        raise CommandError(f"invalid terminal: check {fields}") from None
    if args.key_file is not None and args.key_file.exists():
        raise CommandError(f"{args.key_file} exists already; give a new file for the key")

    async def work(db: Any) -> int:
        try:
            await Terminals(db).register(record)
        except TerminalExists as exc:
            raise CommandError(str(exc)) from None
        return 0

    await _with_catalog(settings, work)
    _hand_over(key, args.key_file, record.terminal_id)
    return 0


async def list_terminals(settings: Settings, args: argparse.Namespace) -> int:
    from catalog.assignments import Assignments
    from catalog.terminals import Terminals

    today = datetime.now(UTC).date().isoformat()

    async def work(db: Any) -> int:
        terminals = await Terminals(db).all()
        assignments = Assignments(db)
        print(f"{'terminal':<20} {'task classes':<24} {'capacity':>8} {'today':>6}  {'owner':<28} {'state':<8} last heartbeat")
        for t in terminals:
            load = await assignments.load(t.terminal_id, today)
            state = "retired" if not t.active else "online" if t.online else "offline"
            beat = t.last_heartbeat.isoformat(timespec="seconds") if t.last_heartbeat else "never"
            print(f"{t.terminal_id:<20} {','.join(t.task_classes):<24} {t.capacity_per_day:>8} {load:>6}  "
                  f"{t.owner_kind + ':' + t.owner:<28} {state:<8} {beat}")
        if not terminals:
            print("(no terminals registered: slidestream terminal register --help)", file=sys.stderr)
        return 0

    return await _with_catalog(settings, work)


async def retire(settings: Settings, args: argparse.Namespace) -> int:
    from catalog.terminals import Terminals, UnknownTerminal

    async def work(db: Any) -> int:
        try:
            await Terminals(db).set_active(args.id, False)
        except UnknownTerminal as exc:
            raise CommandError(str(exc)) from None
        print(f"terminal {args.id} retired: its key is refused; the distribution sweep moves its open exams",
              file=sys.stderr)
        return 0

    return await _with_catalog(settings, work)


async def rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    from catalog.terminals import Terminals, UnknownTerminal
    from core.secrets import key_digest, new_key

    if args.key_file is not None and args.key_file.exists():
        raise CommandError(f"{args.key_file} exists already; give a new file for the key")
    key = new_key()

    async def work(db: Any) -> int:
        try:
            await Terminals(db).set_key(args.id, key_digest(key))
        except UnknownTerminal as exc:
            raise CommandError(str(exc)) from None
        return 0

    await _with_catalog(settings, work)
    _hand_over(key, args.key_file, args.id)  # the old key stopped working with the change
    return 0


def add_admin_commands(sub: argparse._SubParsersAction, settings: Callable[[], Settings]) -> None:  # noqa: SLF001 - argparse exposes no public type
    def runner(command: Callable[[Settings, argparse.Namespace], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            try:
                return asyncio.run(command(settings(), args))
            except CommandError as exc:
                print(f"slidestream terminal {args.terminal_command}: {exc}", file=sys.stderr)
                return USAGE_ERROR
        return run

    r = sub.add_parser("register", help="register a reading terminal; prints its key once (or --key-file)")
    r.add_argument("--id", required=True, help="terminal ID (letters, digits, '.', '_', '-')")
    r.add_argument("--task-classes", required=True, type=_task_classes, help="comma-separated, e.g. gi,general")
    r.add_argument("--capacity", required=True, type=int, help="slides per day the policy gives it at most")
    owner = r.add_mutually_exclusive_group(required=True)
    owner.add_argument("--owner-user", help="the pathologist (username) whose terminal it is")
    owner.add_argument("--owner-department", help="the department whose terminal it is")
    r.add_argument("--key-file", type=Path, help="write the key to this new file (mode 0600) instead of printing it")
    r.set_defaults(func=runner(register))

    ls = sub.add_parser("list", help="registered terminals: task classes, capacity, today's load, owner, state")
    ls.set_defaults(func=runner(list_terminals))

    rt = sub.add_parser("retire", help="retire a terminal: key refused, never assigned, open exams moved")
    rt.add_argument("id", help="terminal ID")
    rt.set_defaults(func=runner(retire))

    rk = sub.add_parser("rotate-key", help="give a terminal a new key; the old one stops working at once")
    rk.add_argument("id", help="terminal ID")
    rk.add_argument("--key-file", type=Path, help="write the key to this new file (mode 0600) instead of printing it")
    rk.set_defaults(func=runner(rotate_key))
