"""What became of one ingested slide, read from the broker: QC's verdict, then the save
agent's ``slide.stored`` or its dead letter (``slidestream ingest --wait``). Open before the
scan is announced, so no answer can slip past."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer

from core.kafka import tail_from_end
from core.settings import Settings
from scanner.verdicts import VerdictListener, listen_for_verdicts, slide_of
from schemas.events import DeadLetter, SlideStored
from schemas.registry import EventValidationError, parse_event
from schemas.topics import Topic


class OutcomeListener:
    def __init__(self, verdicts: VerdictListener, stored: AIOKafkaConsumer) -> None:
        self.verdicts = verdicts
        self._stored = stored

    async def saved(self, exam_id: str, slide_number: int, timeout: float) -> SlideStored | DeadLetter:
        """The slide's ``slide.stored``, or the dead letter of its ``slide.qc_passed``."""
        async def scan() -> SlideStored | DeadLetter:
            async for record in self._stored:
                try:
                    event = parse_event(record.topic, record.value)
                except EventValidationError:
                    continue
                if isinstance(event, DeadLetter) and event.source_topic != Topic.SLIDE_QC_PASSED.value:
                    continue
                if isinstance(event, SlideStored | DeadLetter) and slide_of(event) == (exam_id, slide_number):
                    return event
            raise RuntimeError("consumer stopped")

        return await asyncio.wait_for(scan(), timeout)


@asynccontextmanager
async def listen_for_outcome(settings: Settings) -> AsyncIterator[OutcomeListener]:
    async with listen_for_verdicts(settings) as verdicts, \
            tail_from_end(settings, Topic.SLIDE_STORED.value, Topic.DEAD_LETTER.value, principal="scanner") as stored:
        yield OutcomeListener(verdicts, stored)
