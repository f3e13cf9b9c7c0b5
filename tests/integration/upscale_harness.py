"""Helpers for the upscale agent's integration tests: in-process and subprocess compute
workers on the test stack, an answer collector, request sending."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import faust
import numpy as np
from aiokafka import AIOKafkaConsumer

from agents.upscale import UpscaleService
from compute.upscaler import InterpolationUpscaler
from core.kafka import new_admin, partition_for, producer, tail_from_end
from core.settings import Settings
from infra import process
from schemas.events import Event, UpscaleDone, UpscaleFailed, UpscaleRequested
from schemas.registry import parse_event
from schemas.topics import Topic
from slidestream.compute_worker import create_compute_app

ANSWER_TOPICS = (Topic.UPSCALE_DONE.value, Topic.UPSCALE_FAILED.value, Topic.DEAD_LETTER.value)


class ControlledUpscaler(InterpolationUpscaler):
    """Bicubic with a throttle the test controls: ``pause()`` makes model calls wait (a busy
    GPU), ``allow(n)`` lets n more batches through, ``release()`` lifts the limit."""

    def __init__(self) -> None:
        self._budget: int | None = None  # batches still allowed; None = unlimited
        self._lock = threading.Condition()
        self.calls = 0

    def pause(self) -> None:
        self.allow(0)

    def allow(self, batches: int) -> None:
        with self._lock:
            self._budget = batches
            self._lock.notify_all()

    def release(self) -> None:
        with self._lock:
            self._budget = None
            self._lock.notify_all()

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        with self._lock:
            if not self._lock.wait_for(lambda: self._budget is None or self._budget > 0, timeout=300):
                raise TimeoutError("test never let this batch run")
            if self._budget is not None:
                self._budget -= 1
            self.calls += 1
        return super().upscale_batch(images, scale)


def group_settings(settings: Settings, app_id: str, **compute: Any) -> Settings:
    return settings.model_copy(update={"app_id": app_id,
                                       "compute": settings.compute.model_copy(update=compute)})


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(poll)


COMPUTE_TOPICS = (Topic.UPSCALE_REQUESTED.value, Topic.UPSCALE_CANCELLED.value)


async def start_at_end(settings: Settings) -> None:
    """Position a new consumer group (``settings.app_id``) at the current end of the compute
    topics, so its workers see only what the test sends. A fresh group otherwise reads every
    earlier test's requests from the start: those without a deadline (distribution's
    pre-computation) are computed again, take the batches a test counts or controls, and
    outrank its background requests. A group that already has offsets is left alone."""
    from tests.integration.tierkit import commit_offsets, committed_offsets, end_offsets

    if not await committed_offsets(settings, settings.app_id):
        await commit_offsets(settings, settings.app_id, await end_offsets(settings, COMPUTE_TOPICS))


@asynccontextmanager
async def inprocess_worker(settings: Settings, upscaler: Any, workdir: Path,
                           timeout: float = 180) -> AsyncIterator[tuple[faust.App, UpscaleService]]:
    """A compute worker in this process (so the test can look inside it), in a group that
    starts at the end of the compute topics."""
    await start_at_end(settings)
    previous = Path.cwd()
    os.chdir(workdir)  # Faust creates its data directory in the working directory
    try:
        app, service = create_compute_app(settings, upscaler=upscaler)
        # daemon=False: start() returns once started instead of waiting until stopped.
        worker = faust.Worker(app, loop=asyncio.get_running_loop(), redirect_stdouts=False,
                              override_logging=False, loglevel="warning", daemon=False)
        await worker.start()
        try:
            await wait_until(lambda: service.runtime is not None and bool(app.consumer.assignment())
                             and not app.rebalancing, timeout, "the in-process worker to get partitions")
            yield app, service
        finally:
            release = getattr(upscaler, "release", None)
            if release is not None:  # a test that failed midway must not leave batches blocked
                release()
            await worker.stop()
    finally:
        os.chdir(previous)


class SubprocessWorker:
    """``python -m slidestream.compute_worker`` in its own process, in consumer group ``settings.app_id``."""

    def __init__(self, settings: Settings, name: str, workdir: Path, env: dict[str, str] | None = None,
                 agent_modules: tuple[str, ...] | None = None) -> None:
        self.agent_modules = agent_modules  # None: a compute worker; else an app with these agents
        self.log = workdir / f"{name}.log"
        self.pid_file = workdir / f"{name}.pid"
        self.workdir = workdir
        self.env = {"SLIDESTREAM_APP_ID": settings.app_id, "SLIDESTREAM_COMPUTE__MODEL": "bicubic",
                    "SLIDESTREAM_LOG_FORMAT": "json", **(env or {})}
        self.proc: Any = None

    def start(self) -> None:
        if self.agent_modules is None:
            argv = [sys.executable, "-m", "slidestream.compute_worker", "worker", "--loglevel", "info"]
        else:
            code = ("import faust; from agents.app import create_app; from core.settings import get_settings; "
                    "from core.logging import configure_logging; s = get_settings(); configure_logging(s); "
                    f"app = create_app(s, agent_modules={self.agent_modules!r}); "
                    "faust.Worker(app, override_logging=False, redirect_stdouts=False).execute_from_commandline()")
            argv = [sys.executable, "-c", code, "worker", "--loglevel", "info"]
        env = {**self.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.proc = process.spawn(argv, log_path=self.log, pid_path=self.pid_file, env=env, cwd=self.workdir)

    def stop(self, grace_s: float = 30.0) -> None:
        process.stop(self.pid_file, grace_s=grace_s)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ready(self) -> bool:
        return "upscale.started" in self.log_text()


class Answers:
    """Every upscale.done / upscale.failed / dead letter published from now on, in order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: list[tuple[float, Event]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Answers:
        self._exits = contextlib.AsyncExitStack()
        self._consumer = await self._exits.enter_async_context(
            tail_from_end(self.settings, *ANSWER_TOPICS, fetch_max_wait_ms=20, wait_s=60))
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._exits.aclose()

    async def _read(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            self.events.append((time.monotonic(), parse_event(record.topic, record.value)))

    def of(self, request: UpscaleRequested) -> list[Event]:
        return [e for _, e in self.events if getattr(e, "request_id", None) == request.request_id]

    def finished(self, request: UpscaleRequested) -> bool:
        return any(isinstance(e, UpscaleDone | UpscaleFailed) and e.remaining == 0 for e in self.of(request))

    def results(self, request: UpscaleRequested) -> list:
        return [r for e in self.of(request) if isinstance(e, UpscaleDone) for r in e.results]

    async def wait_finished(self, requests: Sequence[UpscaleRequested], timeout: float) -> None:
        await wait_until(lambda: all(self.finished(r) for r in requests), timeout,
                         f"{sum(not self.finished(r) for r in requests)} of {len(requests)} requests")


async def send(settings: Settings, requests: Sequence[UpscaleRequested], partition: int | None = None) -> list[int]:
    """Send requests to their priority class's partition; returns their offsets."""
    async with producer(settings) as prod:
        offsets = []
        for r in requests:
            p = partition if partition is not None else partition_for(r.priority, r.exam_id, r.slide_number)
            meta = await prod.send_and_wait(Topic.UPSCALE_REQUESTED.value, r.to_json_bytes(),
                                            key=r.exam_id.encode(), partition=p)
            offsets.append(meta.offset)
        return offsets


async def send_raw(settings: Settings, value: bytes, partition: int) -> None:
    async with producer(settings) as prod:
        await prod.send_and_wait(Topic.UPSCALE_REQUESTED.value, value, partition=partition)


async def committed_offsets(settings: Settings, group: str) -> dict[int, int]:
    admin = new_admin(settings)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == Topic.UPSCALE_REQUESTED.value}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
