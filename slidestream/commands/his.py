"""``slidestream his``: the HIS adapter (HL7 v2 over MLLP, and JSON over HTTP),
``slidestream his send``, a small HL7 sender for trying it out and for scripts, and
``slidestream his key``, the JSON endpoint's sender keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import ssl
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from core.settings import Settings


async def send_adt(settings: Settings, trigger: str, patient_id: str, *, at: datetime | None = None,
                   visit_id: str | None = None, ward: str | None = None, host: str | None = None,
                   port: int | None = None, timeout_s: float = 30.0, tls: ssl.SSLContext | None = None) -> tuple[str, str]:
    """Send one ADT^A01/A03 to the MLLP listener; (MSA-1 code, MSA-3 text) of its answer."""
    from his.hl7_adt import build_adt
    from his.mllp import send_message

    message = build_adt(trigger, patient_id, at or datetime.now(UTC), f"CLI{uuid.uuid4().hex[:12]}",
                        visit_id=visit_id, ward=ward, sender="SLIDESTREAM-CLI")
    reply = await send_message(host or settings.his.host, port or settings.his.mllp_port, message,
                               timeout_s=timeout_s, tls=tls)
    msa = reply.segment("MSA")
    return str(msa[1]), str(msa[3]) if len(msa) > 3 else ""


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give a timezone, e.g. 2026-03-01T12:00:00+01:00")
    return value


def add_commands(sub: argparse._SubParsersAction, settings: Callable[[], Settings]) -> None:  # noqa: SLF001 - argparse exposes no public type
    p = sub.add_parser("his", help="run the HIS adapter: HL7 ADT^A01/A03 over MLLP and a JSON HTTP endpoint "
                                   "(`his send` sends one ADT message to it)")
    actions = p.add_subparsers(dest="his_action")

    def run(args: argparse.Namespace) -> int:
        from core.logging import configure_logging
        from his.serve import serve

        config = settings()
        configure_logging(config)  # patient IDs and identity redacted from every log line
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(config))
        return 0

    def send(args: argparse.Namespace) -> int:
        tls = None
        if args.tls or args.tls_ca or args.tls_cert:
            from his.mllp import client_tls_context

            if (args.tls_cert is None) != (args.tls_key is None):
                print("slidestream his send: --tls-cert and --tls-key go together", file=sys.stderr)
                return 2
            tls = client_tls_context(args.tls_ca, args.tls_cert, args.tls_key)
        try:
            code, text = asyncio.run(send_adt(settings(), args.trigger, args.patient, at=args.at,
                                              visit_id=args.visit, ward=args.ward, host=args.host,
                                              port=args.port, timeout_s=args.timeout, tls=tls))
        except asyncio.IncompleteReadError:
            print("slidestream his send: the MLLP listener closed the connection without an answer "
                  "(is this host in its his.mllp_allowed_peers?)", file=sys.stderr)
            return 2
        except (OSError, TimeoutError) as exc:
            print(f"slidestream his send: no answer from the MLLP listener ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            return 2
        print(f"{code}{': ' + text if text else ''}")
        return 0 if code == "AA" else 1

    def key(args: argparse.Namespace) -> int:
        from his.auth import install_key, key_digest, key_file, new_key

        config = settings()
        if args.new:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.new):
                print("slidestream his key: a sender name is 1-64 letters, digits, '_', '.' or '-'", file=sys.stderr)
                return 2
            fresh = new_key()
            print(fresh)
            print(f"give the key to sender {args.new} once; configure only its digest, e.g.\n"
                  f"  SLIDESTREAM_HIS__API_KEYS='{{\"{args.new}\": \"{key_digest(fresh)}\"}}'", file=sys.stderr)
            return 0
        if config.his.api_keys:
            print("slidestream his key: his.api_keys is configured (senders: "
                  f"{', '.join(sorted(config.his.api_keys))}); the install's own key is not accepted. "
                  "Make a sender key with `slidestream his key --new SENDER`.", file=sys.stderr)
            return 1
        path = key_file(config)
        if args.path:
            print(path)
            return 0
        print(install_key(config))
        print(f"(the install's HIS key, kept in {path}, mode 0600: send it as `Authorization: Bearer <key>`)",
              file=sys.stderr)
        return 0

    p.set_defaults(func=run)
    k = actions.add_parser("key", help="print the JSON endpoint's key of this install (made on first use), "
                                       "or make a new sender key to configure by its digest")
    k.add_argument("--path", action="store_true", help="print where the install's key is kept instead")
    k.add_argument("--new", metavar="SENDER", help="make a new key for SENDER: prints the key (stdout) and "
                                                   "the his.api_keys setting with its SHA-256 digest (stderr)")
    k.set_defaults(func=key)
    s = actions.add_parser("send", help="send one ADT^A01 (admit) or ADT^A03 (discharge) over MLLP; "
                                        "prints the acknowledgement code")
    s.add_argument("trigger", choices=["A01", "A03"])
    s.add_argument("--patient", required=True, help="patient ID (PID-3)")
    s.add_argument("--visit", help="visit number (PV1-19)")
    s.add_argument("--ward", help="ward (PV1-3)")
    s.add_argument("--at", type=_timestamp, help="event time, ISO 8601 with timezone (default: now)")
    s.add_argument("--host", help="listener host (default: settings.his.host)")
    s.add_argument("--port", type=int, help="listener port (default: settings.his.mllp_port)")
    s.add_argument("--timeout", type=float, default=30.0)
    s.add_argument("--tls", action="store_true", help="MLLP over TLS (the listener's certificate checked "
                                                      "against the system's CAs, or --tls-ca)")
    s.add_argument("--tls-ca", type=Path, help="CA file that signed the listener's certificate (implies --tls)")
    s.add_argument("--tls-cert", type=Path, help="this sender's certificate (PEM), for a listener that requires one")
    s.add_argument("--tls-key", type=Path, help="the key of --tls-cert (PEM)")
    s.set_defaults(func=send)
