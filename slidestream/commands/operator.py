"""What happened to a slide, and what was refused: ``slidestream slide EXAM SLIDE`` and
``slidestream dead-letters``. Read-only; neither prints a patient ID, a Kafka key (which
may be one) or a rejected payload."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from core.settings import Settings

Echo = Callable[[str], None]


def missing_report_line(retention_days: int, saved_at: datetime | None, now: datetime) -> str:
    """What to say when the ingest bucket holds no QC report of a slide: expired, when the
    slide was saved longer ago than reports are kept; otherwise the possible reasons."""
    if saved_at is not None and saved_at.tzinfo is None:
        saved_at = saved_at.replace(tzinfo=UTC)  # the catalog stores UTC
    if saved_at is not None and now - saved_at >= timedelta(days=retention_days):
        return (f"  QC: report expired (QC reports are kept {retention_days} days in the ingest bucket; "
                f"slide saved {saved_at:%Y-%m-%d})")
    return (f"  QC: no report in the ingest bucket (not scanned through QC, or expired: QC reports are kept "
            f"{retention_days} days)")


async def show_slide(settings: Settings, exam_id: str, slide_number: int, echo: Echo = print) -> int:
    """QC verdict with reasons (the report QC left in the ingest bucket), catalog rows with
    tier, object, checksum and any move in progress, and the slide's audit history."""
    from catalog.db import connect, database
    from catalog.repository import Catalog
    from schemas.common import ImageState, ObjectRef
    from schemas.layout import qc_report_prefix
    from storage.objects import ObjectStore

    client = connect(settings.mongo)
    store = ObjectStore(settings.storage)
    try:
        catalog = Catalog(database(client, settings.mongo))
        echo(f"exam {exam_id} slide {slide_number}")
        report_ref = ObjectRef(bucket=store.bucket("ingest"), key=qc_report_prefix(exam_id, slide_number) + "report.json")
        images = await catalog.find_images(exam_id=exam_id, slide_number=slide_number)
        history = [e for e in await catalog.exam_history(exam_id, limit=200)
                   if e.target.get("slide_number") in (None, slide_number)]
        try:
            report = json.loads(await store.get_bytes(report_ref, max_bytes=16 << 20))
        except FileNotFoundError:
            saves = [e.at for e in history if e.action == "save"]
            lr_times = [i.acquired_at for i in images if i.state is ImageState.LR]
            saved_at = min(saves) if saves else min(lr_times) if lr_times else None
            echo(missing_report_line(settings.storage.ingest_retention.qc_report_days, saved_at, datetime.now(UTC)))
        else:
            echo(f"  QC: {'passed' if report.get('passed') else 'failed'}"
                 f"{' (' + report['failure'] + ')' if report.get('failure') else ''}: {report.get('reason', '')}")
            for check in (report.get("qc") or {}).get("checks", []):
                if check.get("judged", True):
                    echo(f"    {check.get('name')}: {'ok' if check.get('passed') else 'FAILED'}"
                         f"{' - ' + check['reason'] if check.get('reason') else ''}")
        if not images:
            echo("  catalog: no image of this slide")
        for image in images:
            kind = "LR" if image.state is ImageState.LR else "HR tiles"
            echo(f"  catalog: {kind} in {image.tier.value} at {image.object}"
                 f"{', sha256 ' + image.sha256[:16] if image.sha256 else ''}"
                 f"{', ' + str(image.width) + 'x' + str(image.height) + ' px' if image.width else ''}"
                 f", read {image.access_count} time(s)")
            if image.mirror is not None:
                echo(f"           mirror {image.mirror}")
            if image.pending_move is not None:
                move = image.pending_move
                echo(f"           move in progress: {move.from_tier.value if move.from_tier else '?'} -> "
                     f"{move.to_tier.value if move.to_tier else 'dropped'}, step {move.step}, "
                     f"since {move.started_at:%Y-%m-%d %H:%M:%S}")
        for entry in reversed(history[:20]):
            echo(f"  {entry.at:%Y-%m-%d %H:%M:%S} {entry.action} {entry.outcome} by {entry.actor}"
                 f"{' - ' + str(entry.detail.get('error')) if entry.detail.get('error') else ''}")
        return 0 if images else 1
    finally:
        await client.close()
        store.close()


async def show_dead_letters(settings: Settings, since: datetime, echo: Echo = print, limit: int = 200) -> int:
    """Refused events since ``since``: when, from where, why, the payload's size and the
    original key's ``patient_ref``. Neither the redacted copy nor anything unreadable is
    printed."""
    from core.kafka import records_since
    from schemas.events import DeadLetter
    from schemas.registry import EventValidationError, parse_event
    from schemas.topics import Topic

    records = await records_since(settings, Topic.DEAD_LETTER.value, since, limit=limit)
    shown = unreadable = 0
    for record in records:
        try:
            letter = parse_event(Topic.DEAD_LETTER, record.value)
        except EventValidationError:
            unreadable += 1  # e.g. a version-1 letter, which kept the raw payload: never shown
            continue
        assert isinstance(letter, DeadLetter)
        copy = "redacted copy" if letter.redacted is not None else "no copy"
        key = f", key ref {letter.key_ref}" if letter.key_ref else ""
        echo(f"{letter.received_at:%Y-%m-%d %H:%M:%S} {letter.source_topic}[{letter.partition}]@{letter.offset}: "
             f"{letter.error} ({letter.payload_size} bytes, {copy}{key}; dead letter {letter.event_id})")
        shown += 1
    echo(f"{shown} dead letter(s) since {since:%Y-%m-%d %H:%M:%S %Z}"
         + (f"; {unreadable} unreadable record(s) not shown" if unreadable else ""))
    return 0


def _since(text: str) -> datetime:
    """``2h``, ``30m``, ``7d`` ago, or an ISO 8601 time (UTC if no zone is given)."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("give e.g. 2h, 30m, 7d or 2026-11-26T08:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_commands(sub: argparse._SubParsersAction, settings: Callable[[], Settings]) -> None:  # noqa: SLF001 - argparse exposes no public type
    p = sub.add_parser("slide", help="what happened to a slide: QC verdict, catalog rows, tiers, history")
    p.add_argument("exam_id")
    p.add_argument("slide_number", type=int)

    def slide(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(show_slide(settings(), args.exam_id, args.slide_number))
        except Exception as exc:  # noqa: BLE001 - say which server did not answer, no traceback
            print(f"slidestream slide: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2

    p.set_defaults(func=slide)

    p = sub.add_parser("dead-letters", help="refused events and why (no payloads: they may hold identity data)")
    p.add_argument("--since", type=_since, default="24h", help="2h, 30m, 7d or an ISO 8601 time (default 24h)")

    def dead_letters(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(show_dead_letters(settings(), args.since))
        except Exception as exc:  # noqa: BLE001 - say which server did not answer, no traceback
            print(f"slidestream dead-letters: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2

    p.set_defaults(func=dead_letters)
