"""Save agent: ``slide.qc_passed`` -> LR slide into the recent tier and the mirror, catalog
rows, ``slide.stored`` (SPEC 2, save). Logic in ``storage.save``."""

from __future__ import annotations

from functools import partial

import faust

from agents.event_processing import process
from agents.messaging import decode, raw_topic
from agents.storage_services import LazyServices
from core.settings import Settings
from schemas.events import SlideQcPassed
from schemas.topics import Topic


def register(app: faust.App, settings: Settings) -> None:
    services = LazyServices.for_app(app, settings)

    @app.agent(raw_topic(app, Topic.SLIDE_QC_PASSED.value), name="save")
    async def save_slides(stream: faust.StreamT) -> None:
        async for event in stream.events():
            slide = await decode(app, event.message)
            if not isinstance(slide, SlideQcPassed):
                continue
            svc = await services.get()
            await process(app, event.message, partial(svc.saver.save, slide), what="save slide")
