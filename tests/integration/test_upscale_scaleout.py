"""Scale-out on the real broker: two compute worker processes in one consumer group share a
whole-slide job, every tile is produced exactly once, the stitched HR TIFF is right, and an
interactive request overtakes the background backlog."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from compute.samples import downsample, load_rgb, shared_images, store_sample_slide, tile_mosaic
from compute.upscaler import InterpolationUpscaler
from compute.wholeslide import Progress, generate_whole_slide
from core.settings import Settings, get_settings
from schemas.events import TileRef, UpscaleDone, UpscaleRequested
from schemas.layout import hr_prefix
from schemas.topics import Priority, priority_partitions
from slide_io import Compression, TiledTiff
from storage.objects import ObjectStore
from tests.integration.upscale_harness import (
    Answers,
    SubprocessWorker,
    group_settings,
    send,
    start_at_end,
    unique,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_BATCH = 4
WORKERS = 2


@pytest.fixture(scope="module")
def lr_pixels() -> np.ndarray:
    images = shared_images(get_settings().shared_data)
    if len(images) < 4:
        pytest.skip("shared H&E data not available")
    return tile_mosaic([downsample(load_rgb(p), 4) for p in images[4:8]], columns=2)  # 500 x 500 LR


def assigned_partitions(worker: SubprocessWorker) -> set[int] | None:
    """upscale.requested partitions of the worker's latest assignment (from its log)."""
    lines = [line for line in worker.log_text().splitlines() if "newly assigned partitions" in line]
    if not lines:
        return None
    return {int(p) for p in re.findall(r"topic='upscale\.requested', partition=(\d+)", lines[-1])}


def computed_per_worker(workers: list[SubprocessWorker]) -> list[int]:
    counts = []
    for worker in workers:
        total = 0
        for line in worker.log_text().splitlines():
            if '"upscale.batch_done"' in line:
                total += int(json.loads(line[line.index("{"):]).get("computed", 0))
        counts.append(total)
    return counts


async def test_two_workers_share_a_slide_exactly_once_and_interactive_overtakes(
        stack: Settings, lr_pixels: np.ndarray, tmp_path: Path) -> None:
    settings = group_settings(stack, unique("it-scaleout"), max_batch=MAX_BATCH)
    exam = unique("IT-SCALE")
    await store_sample_slide(stack, exam, 1, lr_pixels)
    await start_at_end(settings)  # count only this test's tiles, not older tests' leftovers
    workers = [SubprocessWorker(settings, f"worker-{i}", tmp_path,
                                env={"SLIDESTREAM_COMPUTE__MAX_BATCH": str(MAX_BATCH)}) for i in range(WORKERS)]
    for worker in workers:
        worker.start()
    try:
        await wait_until(lambda: all(w.ready() for w in workers), 240, "both workers to start")
        # Both in the group, the six partitions split between them.
        await wait_until(lambda: all(assigned_partitions(w) for w in workers)
                         and sum(len(assigned_partitions(w) or ()) for w in workers) == 6, 240, "the shared assignment")
        assignment = [assigned_partitions(w) or set() for w in workers]
        # Each worker holds a partition of every priority class, so both share the slide.
        for partitions in assignment:
            for priority in Priority:
                assert partitions & set(priority_partitions(priority)), (priority, assignment)

        progress: list[Progress] = []
        interactive = UpscaleRequested(exam_id=exam, slide_number=1, scale=8, priority="interactive",
                                       tiles=[TileRef(level=12, col=15, row=15), TileRef(level=12, col=14, row=15)])
        async with Answers(stack) as answers:
            job = asyncio.create_task(generate_whole_slide(
                settings, exam, 1, 8, output=tmp_path / "hr.tiff", compression=Compression.ZSTD,
                chunk_tiles=8, on_progress=progress.append))
            await wait_until(lambda: bool(progress) and progress[-1].done >= 48 or job.done(), 300,
                             "the background job to be under way")
            assert not job.done()
            done_at_send = progress[-1].done
            await send(stack, [interactive])
            await answers.wait_finished([interactive], 120)
            done_at_answer = progress[-1].done
            result = await asyncio.wait_for(job, 600)
    finally:
        for worker in workers:
            worker.stop()

    total = 16 * 16
    # Overtaking: the interactive request was answered while most of the backlog still
    # waited; meanwhile at most about two batches per worker of background work finished.
    assert done_at_answer < total - 64
    assert done_at_answer - done_at_send <= 3 * MAX_BATCH * WORKERS + 8
    assert [r.cached for r in answers.results(interactive)] == [False, False]

    # Exactly once: each tile computed by one worker, once, and stored once.
    job_answers = [e for _, e in answers.events if isinstance(e, UpscaleDone) and e.request_id != interactive.request_id
                   and e.exam_id == exam]
    computed = Counter((r.tile.col, r.tile.row) for e in job_answers for r in e.results if not r.cached)
    computed.update((r.tile.col, r.tile.row) for r in answers.results(interactive))
    assert set(computed) == {(c, r) for c in range(16) for r in range(16)}
    assert set(computed.values()) == {1}
    per_worker = computed_per_worker(workers)
    assert sum(per_worker) == total and min(per_worker) > 0, per_worker  # both shared the slide
    assert result.tiles == total and result.computed == total - 2  # two were done for the viewer first

    store = ObjectStore(stack.storage)
    try:
        listing = await store.list_prefix(stack.storage.hr_cache.bucket, f"{hr_prefix(exam, 1, 8)}12/")
        assert len(listing) == total
        assert await store.exists(result.hr_slide)
    finally:
        store.close()

    # The stitched pyramid is the upscaled slide (lossless here; bicubic workers).
    expected = InterpolationUpscaler().upscale_batch([lr_pixels], 8)[0]
    with TiledTiff(tmp_path / "hr.tiff") as tiff:
        assert (tiff.levels[0].width, tiff.levels[0].height) == (4000, 4000)
        assert tiff.mpp == pytest.approx(2.0 / 8)
        np.testing.assert_array_equal(tiff.read_region(0, 0, 0, 4000, 4000), expected)
        assert len(tiff.levels) == 5
