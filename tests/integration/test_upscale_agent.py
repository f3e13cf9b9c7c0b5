"""The upscale agent in a real Faust worker on the real broker: answers, bad input, offsets
committed only after the work is done, and priority pauses that survive rebalances."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from compute.plan import SlideGeometry
from compute.samples import downsample, load_rgb, shared_images, store_sample_slide
from core.kafka import partition_for
from core.settings import Settings, get_settings
from core.upscale_client import UpscaleClient
from schemas.events import (
    DeadLetter,
    Region,
    TileRef,
    UpscaleCancelled,
    UpscaleDone,
    UpscaleFailed,
    UpscaleRequested,
)
from schemas.topics import Priority, priority_partitions
from storage.objects import ObjectStore
from tests.integration.upscale_harness import (
    Answers,
    ControlledUpscaler,
    SubprocessWorker,
    committed_offsets,
    group_settings,
    inprocess_worker,
    send,
    send_raw,
    unique,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKGROUND = set(priority_partitions(Priority.BACKGROUND))


@pytest.fixture(scope="module")
def lr_pixels() -> np.ndarray:
    images = shared_images(get_settings().shared_data)
    if not images:
        pytest.skip("shared H&E data not available")
    return downsample(load_rgb(images[3]), 4)[:250, :250]  # x8: 2000 px, 8 x 8 top tiles


@pytest.fixture(scope="module")
async def slide(stack: Settings, lr_pixels: np.ndarray) -> str:
    exam = unique("IT-UP")
    await store_sample_slide(stack, exam, 1, lr_pixels)
    return exam


def region_request(exam: str, priority: str, scale: int = 4, **region: int) -> UpscaleRequested:
    box = {"x": 0, "y": 0, "width": 512, "height": 512} | region
    return UpscaleRequested(exam_id=exam, slide_number=1, scale=scale, priority=priority, region=Region(**box))


async def test_requests_are_answered_and_committed_only_when_done(
        stack: Settings, slide: str, tmp_path: Path) -> None:
    settings = group_settings(stack, unique("it-upscale"), max_batch=2, interactive_max_batch=2)
    upscaler = ControlledUpscaler()
    request = region_request(slide, "interactive", width=1000, height=1000)  # 4 x 4 tiles at x4
    partition = partition_for(Priority.INTERACTIVE, request.exam_id, request.slide_number)
    async with Answers(stack) as answers, inprocess_worker(settings, upscaler, tmp_path) as (_, service):
        upscaler.allow(1)  # one batch, then the "GPU" is busy
        [offset] = await send(stack, [request])
        await wait_until(lambda: len(answers.of(request)) >= 1, 120, "a first partial answer")
        first = answers.of(request)[0]
        assert isinstance(first, UpscaleDone) and first.remaining == 14
        await asyncio.sleep(2.5)  # more than Faust's commit interval (1 s)
        # In progress: the offset is not committed (a crash now would redeliver the request).
        assert (await committed_offsets(stack, settings.app_id)).get(partition, -1) <= offset
        # (A fresh consumer group also reads older tests' requests from the topic: ask about ours.)
        assert service.runtime is not None and service.runtime.engine.in_progress(request.request_id)
        upscaler.release()
        await answers.wait_finished([request], 120)
        # Done: now it is (Faust commits acknowledged offsets every second).
        await wait_until_committed(stack, settings.app_id, partition, offset, timeout=30)
    results = answers.results(request)
    assert sorted((r.tile.col, r.tile.row) for r in results) == [(c, r) for c in range(4) for r in range(4)]
    assert all({"queue", "read", "compute", "write"} <= set(e.timings_ms) for e in answers.of(request)
               if isinstance(e, UpscaleDone))
    store = ObjectStore(stack.storage)
    try:
        assert all(await asyncio.gather(*(store.exists(r.object) for r in results)))
    finally:
        store.close()


async def wait_until_committed(stack: Settings, group: str, partition: int, offset: int, timeout: float) -> None:
    async def poll() -> None:
        while (await committed_offsets(stack, group)).get(partition, -1) <= offset:
            await asyncio.sleep(0.5)

    await asyncio.wait_for(poll(), timeout)


async def test_bad_requests_get_reasons_and_the_agent_keeps_going(
        stack: Settings, slide: str, tmp_path: Path) -> None:
    settings = group_settings(stack, unique("it-upscale"))
    unknown = UpscaleRequested(exam_id=unique("NO-EXAM"), slide_number=1, scale=8, priority="interactive",
                               tiles=[TileRef(level=11, col=0, row=0)])
    bad_level = UpscaleRequested(exam_id=slide, slide_number=1, scale=8, priority="interactive",
                                 tiles=[TileRef(level=3, col=0, row=0)])
    bad_tile = UpscaleRequested(exam_id=slide, slide_number=1, scale=8, priority="interactive",
                                tiles=[TileRef(level=11, col=99, row=0)])
    good = UpscaleRequested(exam_id=slide, slide_number=1, scale=8, priority="interactive",
                            tiles=[TileRef(level=11, col=1, row=1)])
    garbage = b'{"event_type": "upscale.requested", "scale": 3}'
    async with Answers(stack) as answers, inprocess_worker(settings, ControlledUpscaler(), tmp_path):
        await send_raw(stack, garbage, partition=0)
        await send(stack, [unknown, bad_level, bad_tile, good])
        await answers.wait_finished([unknown, bad_level, bad_tile, good], 120)
        # The dead letter keeps a redacted copy of a JSON payload (nothing to redact here).
        await wait_until(lambda: any(isinstance(e, DeadLetter) and e.redacted == json.loads(garbage)
                                     and e.payload_size == len(garbage) for _, e in answers.events),
                         60, "the dead letter")
    reasons = {name: [e.reason for e in answers.of(r) if isinstance(e, UpscaleFailed)]
               for name, r in {"unknown": unknown, "level": bad_level, "tile": bad_tile}.items()}
    assert "no LR image" in reasons["unknown"][0]
    assert "not a super-resolution level" in reasons["level"][0]
    assert "outside level 11" in reasons["tile"][0]
    assert [(r.tile.col, r.tile.row) for r in answers.results(good)] == [(1, 1)]


async def test_priority_pauses_survive_rebalances(stack: Settings, lr_pixels: np.ndarray, tmp_path: Path) -> None:
    """Background partitions paused by the prefetch gate stay paused through Faust's
    pause-all / resume-all of a rebalance, and nothing of the paused backlog is lost.

    The rebalances: a second member joins the consumer group and leaves again. It runs
    another agent (other topics), so every upscale.requested partition stays with the
    first worker and its backlog stays put: the gate keeps holding across both rebalances."""
    settings = group_settings(stack, unique("it-gate"), max_batch=4, prefetch_tiles=8)
    upscaler = ControlledUpscaler()
    slide = unique("IT-GATE")  # its own slide: no tile of it is in the hr-cache yet
    await store_sample_slide(stack, slide, 1, lr_pixels)
    backlog = [region_request(slide, "background", x=256 * (i % 3), y=256 * ((i // 3) % 3)) for i in range(12)]
    interactive = region_request(slide, "interactive", width=256, height=256)
    async with Answers(stack) as answers, inprocess_worker(settings, upscaler, tmp_path) as (app, service):
        upscaler.pause()  # busy: the backlog stays queued here
        for i, request in enumerate(backlog):
            await send(stack, [request], partition=sorted(BACKGROUND)[i % 2])
        gate = service.gate
        await wait_until(lambda: Priority.BACKGROUND in gate.policy.held and BACKGROUND <= gate.paused_now(),
                         60, "the gate to pause the background partitions")
        engine = service.runtime.engine  # type: ignore[union-attr]  # started above

        def ours() -> int:  # a fresh group also reads older tests' requests: count this test's
            return sum(engine.in_progress(r.request_id) for r in backlog)

        fetched = ours()
        assert 0 < fetched < len(backlog)  # bounded prefetch: the rest waits in Kafka

        other = SubprocessWorker(settings, "member-b", tmp_path, agent_modules=("agents.probe",))
        try:
            for step in ("join", "leave"):
                rebalances = app.rebalancing_count
                other.start() if step == "join" else other.stop()
                await wait_until(lambda seen=rebalances: app.rebalancing_count > seen and not app.rebalancing, 180,
                                 f"the rebalance after the second member's {step}")
                await asyncio.sleep(1.0)  # Faust's resume-all has run
                assert {tp.partition for tp in app.consumer.assignment() if tp.topic == gate.topic} == set(range(6))
                assert Priority.BACKGROUND in gate.policy.held
                assert BACKGROUND <= gate.paused_now(), f"background resumed by the rebalance ({step})"
                assert not set(priority_partitions(Priority.INTERACTIVE)) & gate.paused_now()
                assert ours() == fetched  # nothing more fetched, nothing dropped
        finally:
            other.stop()

        # Interactive work still gets in, and the backlog drains once the "GPU" is free.
        await send(stack, [interactive])
        upscaler.release()
        await answers.wait_finished([interactive, *backlog], 300)
    for request in backlog:
        assert len({(r.tile.col, r.tile.row) for r in answers.results(request)}) == 4


async def test_demo_hook_saves_lr_and_sr_side_by_side(stack: Settings, lr_pixels: np.ndarray, tmp_path: Path) -> None:
    from PIL import Image

    from slidestream.demo.upscale import GAP_PX, demo_upscale_region

    exam = unique("IT-DEMO")
    await store_sample_slide(stack, exam, 1, lr_pixels)
    settings = group_settings(stack, unique("it-demo"))
    async with inprocess_worker(settings, ControlledUpscaler(), tmp_path):
        path = await demo_upscale_region(settings, exam, 1, scale=8, output_dir=tmp_path / "out")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (512, 2 * 512 + GAP_PX, 3)
    left, right = pixels[:, :512], pixels[:, 512 + GAP_PX :]
    # With the bicubic stand-in for the model both halves are the same interpolation of
    # the same LR pixels: the panels line up exactly (a real model differs, but aligned).
    np.testing.assert_array_equal(left, right)
    assert right.std() > 10  # tissue, not blank


async def test_a_cancel_drops_queued_tiles_on_the_worker_holding_the_request(
        stack: Settings, lr_pixels: np.ndarray, tmp_path: Path) -> None:
    """upscale.cancelled is co-partitioned with upscale.requested: the viewer's cancel reaches
    the worker that queued the request, which drops the tiles it has not computed yet."""
    slide = unique("IT-CANCEL")  # its own slide: no tile of it is in the hr-cache yet
    await store_sample_slide(stack, slide, 1, lr_pixels)
    settings = group_settings(stack, unique("it-upscale"), max_batch=2, interactive_max_batch=2)
    upscaler = ControlledUpscaler()
    top = SlideGeometry(*lr_pixels.shape[1::-1]).top_level(4)
    tiles = [TileRef(level=top, col=c, row=r) for r in range(4) for c in range(4)]
    # A viewer's deadline: the consumer groups of later tests read this request again from the
    # topic; past its deadline they refuse it instead of computing the tiles cancelled here.
    request = UpscaleRequested(exam_id=slide, slide_number=1, scale=4, priority="interactive", tiles=tiles,
                               deadline=datetime.now(UTC) + timedelta(seconds=30))
    cancel = UpscaleCancelled(request_id=request.request_id, exam_id=slide, slide_number=1,
                              priority="interactive", tiles=tiles[4:])
    async with Answers(stack) as answers, inprocess_worker(settings, upscaler, tmp_path) as (_, service), \
            UpscaleClient(stack) as client:
        upscaler.allow(1)  # one batch of two, then the "GPU" is busy
        await client.send([(request, None)])
        await wait_until(lambda: len(answers.of(request)) >= 1, 120, "a first partial answer")
        await client.cancel(cancel)
        await wait_until(lambda: any(isinstance(e, UpscaleFailed) for e in answers.of(request)), 60,
                         "the cancelled answer")
        upscaler.release()
        await answers.wait_finished([request], 120)
        assert service.runtime is not None and not service.runtime.engine.in_progress(request.request_id)
    [dropped] = [e for e in answers.of(request) if isinstance(e, UpscaleFailed)]
    assert dropped.cancelled and "cancelled" in dropped.reason
    computed = {(r.tile.col, r.tile.row) for r in answers.results(request)}
    cancelled = {(t.col, t.row) for t in dropped.tiles or []}
    assert computed | cancelled == {(t.col, t.row) for t in tiles} and not computed & cancelled
    # The first batch (two tiles) ran before the cancel; the second was already taken (waiting
    # for the busy "GPU") and finishes; the ten or more still queued were dropped.
    assert 2 <= len(computed) <= 4 and len(cancelled) >= 10
