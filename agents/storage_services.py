"""The storage services of one Faust worker: opened on first use inside the worker's event
loop (agents register before the loop runs) and shared by every agent module of the app, so
a worker holds one database client and one S3 client pool."""

from __future__ import annotations

import asyncio
import weakref

from agents.messaging import FaustSink
from core.kafka import EventSink
from core.settings import Settings
from storage.runtime import Services, open_services


class LazyServices:
    """Opens ``Services`` on first use inside the worker's event loop (agents register
    before the loop runs). ``for_app`` gives every agent module of one Faust app the same
    instance, so a worker holds one database client and one S3 client pool."""

    _by_app: weakref.WeakKeyDictionary[object, LazyServices] = weakref.WeakKeyDictionary()

    @classmethod
    def for_app(cls, app: object, settings: Settings) -> LazyServices:
        holder = cls._by_app.get(app)
        if holder is None:
            holder = cls._by_app[app] = cls(settings, FaustSink(app))
        return holder

    def __init__(self, settings: Settings, sink: EventSink) -> None:
        self._settings = settings
        self._sink = sink
        self._services: Services | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> Services:
        if self._services is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._services is None:
                    self._services = await open_services(self._settings, self._sink)
        return self._services
