"""``slidestream ingest`` and ``slidestream watch``: the scanner side on the command line.

Output names exams and slides, never patient IDs (they may be national ID numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

from core.logging import configure_logging
from core.settings import Settings
from scanner.ids import InvalidIds, validate_ids
from scanner.ingest import IngestError, examine, open_ingestor
from scanner.outcome import OutcomeListener, listen_for_outcome
from scanner.watch import Outcome, ScanRequest, WatchFolder
from schemas.events import DeadLetter, SlideQcFailed


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
    p.add_argument("--wait", type=_positive, nargs="?", const=300.0, metavar="SECONDS",
                   help="then wait (default 300 s) for the QC verdict and the save, and print both")
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


def _without_file_names(exc: BaseException) -> str:
    """An error for the console without the file names an ``OSError`` carries: the watch-folder
    convention puts the patient ID in a scan's name."""
    if isinstance(exc, OSError) and (exc.filename is not None or exc.filename2 is not None):
        return f"{type(exc).__name__}: {exc.strerror or 'error'}"
    return f"{type(exc).__name__}: {exc}"


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(settings)  # JSON on stderr, patient IDs redacted
    try:
        ids = validate_ids(args.patient, args.exam, args.slide, scanner_id=args.scanner, body_part=args.body_part)
    except InvalidIds as exc:
        print(f"slidestream ingest: {exc}", file=sys.stderr)
        return 2

    try:
        facts = examine(args.file)
    except IngestError as exc:
        print(f"slidestream ingest: scan refused: {exc}", file=sys.stderr)
        return 1
    if facts.magnification is None and facts.mpp is None and args.magnification is None and args.mpp is None:
        # QC would refuse it as unsupported; say so now, with the flag, before uploading.
        print("slidestream ingest: the scan states neither its magnification nor its pixel size; "
              "give the scanner's --magnification (e.g. 20 or 40) or --mpp (e.g. 0.25)", file=sys.stderr)
        return 2

    async def run():
        async with contextlib.AsyncExitStack() as exits:
            # Listening starts before the scan is announced, so no answer can slip past.
            outcome = await exits.enter_async_context(listen_for_outcome(settings)) if args.wait else None
            ingestor = await exits.enter_async_context(open_ingestor(settings))
            event = await ingestor.ingest(args.file, ids, magnification=args.magnification, mpp=args.mpp,
                                          facts=facts)
            print(f"ingested exam {event.exam_id} slide {event.slide_number}: {event.ingest} "
                  f"({event.size_bytes} bytes, sha256 {event.sha256[:12]}...), event {event.event_id}", flush=True)
            if outcome is None:
                return 0
            return await report_outcome(outcome, event.exam_id, event.slide_number, args.wait)

    try:
        return asyncio.run(run())
    except IngestError as exc:
        print(f"slidestream ingest: scan refused: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - broker or storage unreachable: say which
        print(f"slidestream ingest: failed ({_without_file_names(exc)})", file=sys.stderr)
        return 1


async def report_outcome(outcome: OutcomeListener, exam_id: str, slide_number: int, timeout_s: float) -> int:
    """Print the QC verdict, then the save's answer; 0 stored, 1 refused, 3 no answer in time."""
    deadline = time.monotonic() + timeout_s
    try:
        verdict = await outcome.verdicts.for_slide(exam_id, slide_number, timeout_s)
    except TimeoutError:
        print(f"no QC verdict within {timeout_s:.0f} s (are the agents running? `slidestream status`)")
        return 3
    if isinstance(verdict, DeadLetter):
        print(f"QC refused the scan event: {verdict.error}")
        return 1
    if isinstance(verdict, SlideQcFailed):
        print(f"QC failed ({verdict.kind.value}): {verdict.reason}")
        return 1
    print(f"QC passed: LR {verdict.width}x{verdict.height} px at {verdict.magnification}x")
    try:
        saved = await outcome.saved(exam_id, slide_number, max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        print(f"not stored within {timeout_s:.0f} s (is the save agent running?)")
        return 3
    if isinstance(saved, DeadLetter):
        print(f"save refused: {saved.error}")
        return 1
    print(f"stored: {saved.object} (tier {saved.tier.value}), mirror {saved.mirror}")
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
