"""``slidestream terminal ...``: register and manage reading terminals (operator, on the
server side) and run the terminal agent (on the reading workstation)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from core.settings import Settings


def add_commands(sub: argparse._SubParsersAction, settings: Callable[[], Settings]) -> None:  # noqa: SLF001 - argparse exposes no public type
    from slidestream.commands.terminal_admin import add_admin_commands
    from slidestream.commands.terminal_agent import add_agent_commands

    p = sub.add_parser("terminal", help="reading terminals: register, list, retire, rotate-key; run the terminal agent")
    terminals = p.add_subparsers(dest="terminal_command", required=True)
    add_admin_commands(terminals, settings)  # register, list, retire, rotate-key
    add_agent_commands(terminals, settings)  # run
