"""``slidestream ingest`` and ``slidestream watch``: the scanner side on the command line.

Output names exams and slides, never patient IDs (they may be national ID numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from core.logging import configure_logging
from core.settings import Settings
from scanner.ids import InvalidIds, validate_ids
from scanner.ingest import IngestError, open_ingestor
from scanner.watch import Outcome, ScanRequest, WatchFolder


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def add_commands(sub: argparse._SubParsersAction, settings_factory) -> None:  # noqa: SLF001 - argparse exposes no public type
    """Add ``ingest`` and ``watch`` to the ``slidestream`` parser."""
    p = sub.add_parser("ingest", help="upload a scan to the ingest bucket and publish slide.scanned")
    p.add_argument("file", type=Path)
    p.add_argument("--patient", required=True, help="patient ID")
    p.add_argument("--exam", required=True, help="pathology exam ID")
    p.add_argument("--slide", required=True, help="slide number within the exam (1-9999)")
    p.add_argument("--scanner", help="scanner ID")
    p.add_argument("--body-part", help="body part / specimen site")
    p.add_argument("--magnification", type=_positive, help="objective power, if the file does not state it")
    p.add_argument("--mpp", type=_positive, help="microns per pixel, if the file does not state it")
    p.set_defaults(func=lambda args: cmd_ingest(args, settings_factory()))

    p = sub.add_parser("watch", help="ingest scans dropped into a folder (see scanner/watch.py for the layout)")
    p.add_argument("directory", type=Path)
    p.add_argument("--scanner", help="scanner ID for scans whose sidecar gives none")
    p.add_argument("--magnification", type=_positive, help="objective power for scans that state none")
    p.add_argument("--interval", type=_positive, default=1.0, help="seconds between polls")
    p.add_argument("--settle", type=_positive, default=2.0, help="seconds a file must stay unchanged")
    p.add_argument("--sidecar-wait", type=_positive, default=30.0,
                   help="seconds a scan without identifiers waits for its sidecar before rejection")
    p.set_defaults(func=lambda args: cmd_watch(args, settings_factory()))


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(settings)  # JSON on stderr, patient IDs redacted
    try:
        ids = validate_ids(args.patient, args.exam, args.slide, scanner_id=args.scanner, body_part=args.body_part)
    except InvalidIds as exc:
        print(f"slidestream ingest: {exc}", file=sys.stderr)
        return 2

    async def run():
        async with open_ingestor(settings) as ingestor:
            return await ingestor.ingest(args.file, ids, magnification=args.magnification, mpp=args.mpp)

    try:
        event = asyncio.run(run())
    except IngestError as exc:
        print(f"slidestream ingest: {args.file.name}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - broker or storage unreachable: say which
        print(f"slidestream ingest: failed ({type(exc).__name__}: {exc}); nothing was published",
              file=sys.stderr)
        return 1
    print(f"ingested exam {event.exam_id} slide {event.slide_number}: {event.ingest} "
          f"({event.size_bytes} bytes, sha256 {event.sha256[:12]}...), event {event.event_id}")
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(settings)
    async def run() -> None:
        async with open_ingestor(settings) as ingestor:
            async def ingest(request: ScanRequest) -> None:
                await ingestor.ingest(request.path, request.ids, magnification=request.magnification,
                                      mpp=request.mpp)

            folder = WatchFolder(args.directory, ingest, settle_s=args.settle, sidecar_wait_s=args.sidecar_wait,
                                 scanner_id=args.scanner, magnification=args.magnification)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            print(f"watching {folder.root} (done/ and rejected/ inside); Ctrl-C to stop", flush=True)

            def report(outcome: Outcome) -> None:
                print(outcome.describe(), flush=True)

            await folder.run(interval_s=args.interval, stop=stop, on_outcome=report)

    try:
        asyncio.run(run())
    except NotADirectoryError as exc:
        print(f"slidestream watch: {exc}", file=sys.stderr)
        return 2
    return 0
