"""Tier agent (SPEC 2, schedule): hospital events and an idle-time timer drive tier moves;
``upscale.done`` results are recorded as HR cache entries. Logic in ``storage.scheduler``.

* ``patient.discharged`` -> LR recent -> mid (or long), HR dropped from the hr-cache;
* ``patient.admitted`` -> the patient's LR slides back to recent;
* ``upscale.done`` -> HR catalog entry (state 1, tier temporary) for the slide;
* timer every ``tiering.sweep_interval_s``: one worker (catalog lease) resumes interrupted
  moves and, only while ingest and upscale queues are quiet, applies the age and usage rules.
"""

from __future__ import annotations

from functools import partial

import faust
import structlog

from agents.event_processing import process
from agents.messaging import decode, raw_topic
from agents.storage_services import LazyServices
from catalog.errors import UnknownExam
from core.settings import Settings
from schemas.catalog import ImageRecord, db_now
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import PatientAdmitted, PatientDischarged, UpscaleDone
from schemas.layout import hr_prefix
from schemas.topics import Topic
from storage.queue_idle import KafkaQueueMonitor
from storage.runtime import Services

log = structlog.get_logger(__name__)


async def record_hr(svc: Services, done: UpscaleDone) -> ImageRecord:
    """Catalog entry for a slide's HR tiles in the hr-cache (one per slide, all scales)."""
    exam = await svc.catalog.get_exam(done.exam_id)
    if exam is None:
        raise UnknownExam(done.exam_id)
    lr = await svc.catalog.get_image(done.exam_id, done.slide_number, ImageState.LR)
    prefix = ObjectRef(bucket=svc.store.bucket(StorageTier.TEMPORARY), key=hr_prefix(done.exam_id, done.slide_number))
    record = ImageRecord(
        exam_id=done.exam_id, patient_id=exam.patient_id, slide_number=done.slide_number, state=ImageState.HR,
        tier=StorageTier.TEMPORARY, object=prefix, acquired_at=db_now(),
        width=lr.width * done.scale if lr and lr.width else None,
        height=lr.height * done.scale if lr and lr.height else None,
        magnification=lr.magnification * done.scale if lr and lr.magnification else None,
    )
    return await svc.catalog.put_hr_image(record)


def register(app: faust.App, settings: Settings) -> None:
    services = LazyServices.for_app(app, settings)
    monitor = KafkaQueueMonitor(settings, settings.tiering.quiet_topics)

    @app.agent(raw_topic(app, Topic.PATIENT_DISCHARGED.value), name="tier-discharge")
    async def on_discharge(stream: faust.StreamT) -> None:
        async for event in stream.events():
            discharge = await decode(app, event.message)
            if not isinstance(discharge, PatientDischarged):
                continue
            svc = await services.get()
            outcome = await process(app, event.message, partial(svc.scheduler.on_discharge, discharge),
                                    what="discharge")
            if outcome is not None:
                log.info("tier.discharge_handled", known=outcome.patient_known, moved=outcome.moved,
                         orphan_hr_objects=outcome.orphan_hr_objects)

    @app.agent(raw_topic(app, Topic.PATIENT_ADMITTED.value), name="tier-admission")
    async def on_admission(stream: faust.StreamT) -> None:
        async for event in stream.events():
            admission = await decode(app, event.message)
            if not isinstance(admission, PatientAdmitted):
                continue
            svc = await services.get()
            outcome = await process(app, event.message, partial(svc.scheduler.on_admission, admission),
                                    what="admission")
            if outcome is not None:
                log.info("tier.admission_handled", known=outcome.patient_known, moved=outcome.moved)

    @app.agent(raw_topic(app, Topic.UPSCALE_DONE.value), name="tier-hr-record")
    async def on_upscale_done(stream: faust.StreamT) -> None:
        async for event in stream.events():
            done = await decode(app, event.message)
            if not isinstance(done, UpscaleDone):
                continue
            svc = await services.get()
            await process(app, event.message, partial(record_hr, svc, done), what="record HR tiles")

    @app.timer(interval=settings.tiering.sweep_interval_s, name="tier-sweep")
    async def sweep() -> None:
        svc = await services.get()
        try:
            if not await svc.sweep_lease.acquire():
                return
            verdict = await monitor.check()
            if not verdict.quiet:
                # Crash recovery does not wait for quiet queues; bulk moves do.
                await svc.scheduler.resume_interrupted()
                log.info("tier_sweep.deferred", reason=verdict.reason)
                return
            await svc.scheduler.sweep()
        except Exception as exc:  # noqa: BLE001 - an outage skips one run; the next timer retries
            log.warning("tier_sweep.failed", error=type(exc).__name__, detail=str(exc)[:200])
