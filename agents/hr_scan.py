"""HR-scan agent: ``slide.qc_passed`` with an HR candidate -> the scan cut into hr-cache tiles
(labelled scanned). Its own agent, so a long cut never holds up saving other slides. Logic in
``storage.hr_scan``."""

from __future__ import annotations

from functools import partial

import faust

from agents.event_processing import process
from agents.messaging import decode, raw_topic
from agents.storage_services import LazyServices
from core.settings import Settings
from schemas.events import SlideQcPassed
from schemas.topics import Topic
from storage.hr_scan import ScannedHrCutter


def register(app: faust.App, settings: Settings) -> None:
    services = LazyServices.for_app(app, settings)
    cutter: ScannedHrCutter | None = None  # built on first use, over the worker's one set of services

    @app.agent(raw_topic(app, Topic.SLIDE_QC_PASSED.value), name="hr-scan")
    async def cut_scans(stream: faust.StreamT) -> None:
        nonlocal cutter
        async for event in stream.events():
            slide = await decode(app, event.message, report=False)
            if not isinstance(slide, SlideQcPassed) or slide.hr_candidate is None:
                continue
            if cutter is None:
                svc = await services.get()
                cutter = ScannedHrCutter(svc.catalog, svc.store,
                                         target_magnification=settings.viewer.target_magnification)
            await process(app, event.message, partial(cutter.cut, slide), what="cut HR scan")
