"""Demo hook: sample slides go scanner -> ingest bucket -> ``slide.scanned`` -> QC agent, and
each slide's verdict is printed. Needs the running stack and at least one agent worker."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from core.settings import Settings
from scanner.ids import validate_ids
from scanner.ingest import open_ingestor
from scanner.samples import Sample, bad_samples, real_samples
from scanner.verdicts import Verdict, listen_for_verdicts, slide_of
from schemas.events import DeadLetter, SlideQcPassed

DEMO_PATIENT = "DEMO-PATIENT-1"


def describe(label: str, verdict: Verdict, seconds: float) -> str:
    """One readable line per slide."""
    head = f"slide {slide_of(verdict)[1]} {label}:"
    if isinstance(verdict, DeadLetter):
        return f"{head} NOT JUDGED, event dead-lettered: {verdict.error} ({seconds:.1f} s)"
    if isinstance(verdict, SlideQcPassed):
        hr = ", HR scan kept as hr-cache candidate" if verdict.hr_candidate else ""
        return (f"{head} PASSED -> LR {verdict.width}x{verdict.height} px at {verdict.magnification:g}x "
                f"in {verdict.lr}{hr} ({seconds:.1f} s)")
    failed = [c for c in verdict.checks if not c.passed]
    why = "; ".join(f"{c.name.value}: {c.reason}" for c in failed) or verdict.reason
    return f"{head} FAILED ({verdict.kind.value}) {why} ({seconds:.1f} s)"


async def demo_ingest_and_qc(settings: Settings, samples: Sequence[Sample] | None = None, *,
                             timeout: float = 180.0, echo: Callable[[str], None] = print) -> list[Verdict]:
    """Ingest ``samples`` (default: real slides and bad files) as one demo exam and return each
    slide's QC verdict, printing a line per slide as it arrives."""
    exam = "DEMO-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="slidestream-demo-") as tmp:
        if samples is None:
            samples = real_samples(settings.shared_data) + bad_samples(settings.shared_data, Path(tmp))
        echo(f"QC demo: {len(samples)} slide(s) of exam {exam} from the scanner to the QC agent")
        async with listen_for_verdicts(settings) as listener, open_ingestor(settings) as ingestor:
            sent: list[tuple[int, Sample, float]] = []
            for number, sample in enumerate(samples, start=1):
                ids = validate_ids(DEMO_PATIENT, exam, number, scanner_id="demo-scanner")
                started = time.monotonic()
                await ingestor.ingest(sample.path, ids, magnification=sample.magnification)
                sent.append((number, sample, started))
            verdicts = []
            for number, sample, started in sent:
                verdict = await listener.for_slide(exam, number, timeout)
                echo(describe(sample.label, verdict, listener.arrival(verdict) - started))
                verdicts.append(verdict)
    return verdicts
