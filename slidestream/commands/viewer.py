"""``slidestream viewer`` (run the viewer), ``slidestream user add`` and ``slidestream assign``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
from collections.abc import Callable

from core.settings import Settings


def _run_viewer(settings: Callable[[], Settings]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from core.logging import configure_logging
        from viewer.serve import serve

        config = settings()
        configure_logging(config)  # uvicorn's lines too: identity redacted, no file names
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(config))
        return 0

    return run


def _add_user(settings: Callable[[], Settings]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from catalog.errors import UserExists
        from viewer.passwords import WeakPassword, random_password
        from viewer.users_admin import add_user

        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        elif args.generate_password:
            password = random_password()
        else:
            password = getpass.getpass(f"password for {args.username}: ")
        try:
            asyncio.run(add_user(settings(), args.username, args.role, password, department=args.department))
        except (UserExists, WeakPassword, ValueError) as exc:
            print(f"slidestream user add: {exc}", file=sys.stderr)
            return 2
        print(f"user {args.username} ({args.role}) created")
        if args.generate_password:
            print(f"password: {password}  (shown once; change it after signing in)")
        return 0

    return run


def _assign(settings: Callable[[], Settings]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from catalog.errors import UnknownExam
        from viewer.users_admin import assign

        try:
            exam = asyncio.run(assign(settings(), args.exam_id, pathologist=args.pathologist,
                                      department=args.department))
        except UnknownExam as exc:
            print(f"slidestream assign: {exc}", file=sys.stderr)
            return 2
        print(f"exam {exam.exam_id}: pathologist {exam.pathologist or '-'}, department {exam.department or '-'}")
        return 0

    return run


def add_commands(sub: argparse._SubParsersAction, settings: Callable[[], Settings]) -> None:  # noqa: SLF001 - argparse exposes no public type
    p = sub.add_parser("viewer", help="run the diagnosis viewer (web UI and tile API) in the foreground")
    p.set_defaults(func=_run_viewer(settings))

    p = sub.add_parser("user", help="manage viewer users")
    users = p.add_subparsers(dest="user_command", required=True)
    add = users.add_parser("add", help="create a user (pathologist, technician or administrator)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=["pathologist", "technician", "administrator"])
    add.add_argument("--department")
    how = add.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    how.add_argument("--generate-password", action="store_true", help="make a random password and print it once")
    add.set_defaults(func=_add_user(settings))

    p = sub.add_parser("assign", help="say who reads an exam (a pathologist and/or a department)")
    p.add_argument("exam_id")
    p.add_argument("--pathologist")
    p.add_argument("--department")
    p.set_defaults(func=_assign(settings))
