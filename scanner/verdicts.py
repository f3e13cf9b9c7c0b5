"""Wait for QC verdicts on the real broker (demo, bench, tests): a consumer on
``slide.qc_passed``, ``slide.qc_failed`` and the dead-letter topic, positioned at their end
before anything is sent, that remembers every outcome it has read so several slides can be
awaited in any order. A dead-lettered ``slide.scanned`` is an outcome too: no verdict will
follow it, and waiting on would only end in a timeout."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer

from core.kafka import tail_from_end
from core.settings import Settings
from schemas.events import DeadLetter, SlideQcFailed, SlideQcPassed, SlideStored
from schemas.registry import EventValidationError, parse_event
from schemas.topics import Topic

Verdict = SlideQcPassed | SlideQcFailed | DeadLetter
VERDICT_TOPICS = (Topic.SLIDE_QC_PASSED.value, Topic.SLIDE_QC_FAILED.value, Topic.DEAD_LETTER.value)


def slide_of(verdict: Verdict | SlideStored) -> tuple[str | None, int | None]:
    """(exam, slide) an answer is about; for a dead letter, read from the redacted copy of the
    rejected event (exam IDs and slide numbers are kept; none when the payload was not JSON)."""
    if not isinstance(verdict, DeadLetter):
        return verdict.exam_id, verdict.slide_number
    exam, slide = verdict.redacted_field("exam_id"), verdict.redacted_field("slide_number")
    return (exam if isinstance(exam, str) else None,
            slide if isinstance(slide, int) and not isinstance(slide, bool) else None)


class VerdictListener:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.seen: list[tuple[float, Verdict]] = []  # (monotonic arrival time, verdict)

    async def wait(self, match: Callable[[Verdict], bool], timeout: float) -> Verdict:
        """The first verdict (already read, or arriving within ``timeout`` s) that ``match``es."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for _, verdict in self.seen[checked:]:
                if match(verdict):
                    return verdict
            checked = len(self.seen)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching QC verdict within {timeout:.0f} s")
            batches = await self._consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    try:
                        event = parse_event(record.topic, record.value)
                    except EventValidationError:
                        continue  # not ours to judge; the agents dead-letter such events
                    if isinstance(event, DeadLetter) and event.source_topic != Topic.SLIDE_SCANNED.value:
                        continue
                    self.seen.append((now, event))  # type: ignore[arg-type]  # narrowed to a verdict above

    async def for_slide(self, exam_id: str, slide_number: int, timeout: float) -> Verdict:
        return await self.wait(lambda v: slide_of(v) == (exam_id, slide_number), timeout)

    def arrival(self, verdict: Verdict) -> float:
        return next(at for at, seen in self.seen if seen is verdict)


@asynccontextmanager
async def listen_for_verdicts(settings: Settings) -> AsyncIterator[VerdictListener]:
    """Open before sending the scans whose verdicts are awaited."""
    async with tail_from_end(settings, *VERDICT_TOPICS, principal="scanner") as consumer:
        yield VerdictListener(consumer)


async def gather_verdicts(listener: VerdictListener, slides: list[tuple[str, int]], timeout: float) -> list[Verdict]:
    """Verdicts for every (exam, slide), in the order given, all within ``timeout`` s. One at a
    time (one consumer); verdicts that arrive out of order wait in ``listener.seen``."""
    deadline = time.monotonic() + timeout
    return [await listener.for_slide(exam, slide, max(0.0, deadline - time.monotonic())) for exam, slide in slides]
