"""``slidestream his``: the HIS adapter (HL7 v2 over MLLP, and JSON over HTTP)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable

from core.settings import Settings


def add_commands(sub: argparse._SubParsersAction, settings: Callable[[], Settings]) -> None:
    p = sub.add_parser("his", help="run the HIS adapter: HL7 ADT^A01/A03 over MLLP and a JSON HTTP endpoint")

    def run(args: argparse.Namespace) -> int:
        from core.logging import configure_logging
        from his.serve import serve

        config = settings()
        configure_logging(config)  # patient IDs and identity redacted from every log line
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(config))
        return 0

    p.set_defaults(func=run)
