"""QC agent: ``slide.scanned`` -> ``slide.qc_passed`` / ``slide.qc_failed``.

Thin: the work is ``qc.service.QcService`` (download, judge in a worker thread so the
event loop keeps heartbeating, store LR and report). Several workers share the partitions of
``slide.scanned`` through the consumer group.

Bad input never stops the agent: a file that cannot be judged gets a ``slide.qc_failed`` with
its reason; an event that is not a valid ``slide.scanned`` goes to the dead-letter topic (and,
when only its identifiers are wrong, also a ``slide.qc_failed`` of kind ``invalid_ids``); an
unexpected failure of the service dead-letters the event with the reason, so it can be replayed.
"""

from __future__ import annotations

import faust
import structlog

from agents.messaging import dead_letter, publish, raw_topic
from core.settings import Settings
from qc.service import QcService, invalid_ids_failure, pipeline_options
from schemas.events import Event, SlideScanned
from schemas.registry import EventValidationError, parse_event
from schemas.topics import Topic
from storage.ingest_bucket import IngestBucket

log = structlog.get_logger(__name__)


def register(app: faust.App, settings: Settings) -> None:
    # attempts=None: an S3 outage delays QC (the offset is not committed), it is never a verdict.
    service = QcService(pipeline_options(settings), IngestBucket(settings.storage, attempts=None))

    async def emit(event: Event) -> None:
        await publish(app, event.topic.value, event, key=event.kafka_key())

    @app.agent(raw_topic(app, Topic.SLIDE_SCANNED.value), name="qc")
    async def quality_control(stream: faust.StreamT) -> None:
        async for record in stream.events():
            message = record.message
            try:
                scanned = parse_event(Topic.SLIDE_SCANNED, message.value)
            except EventValidationError as exc:
                await dead_letter(app, message, str(exc))
                failure = invalid_ids_failure(message.value or b"", exc.fields, exc.reason)
                if failure is not None:
                    await emit(failure)
                continue
            assert isinstance(scanned, SlideScanned)
            try:
                result = await service.handle(scanned)
            except Exception as exc:  # noqa: BLE001 - park the event with the reason; keep serving
                log.exception("qc.failed_to_run", exam_id=scanned.exam_id, slide_number=scanned.slide_number)
                await dead_letter(app, message, f"QC could not run: {type(exc).__name__}: {str(exc)[:500]}")
                continue
            if result is None:  # judged and saved before (a redelivery): nothing more to say
                continue
            await emit(result)
            log.info("qc.verdict", exam_id=scanned.exam_id, slide_number=scanned.slide_number,
                     verdict=result.event_type, kind=getattr(result, "kind", None))
