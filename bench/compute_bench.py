"""Compute service: throughput, interactive latency under a background backlog, cost of
preemption, one vs two workers.

    python -m bench.compute_bench [--quick] [--skip-stack] [--threads 1]
    python -m bench.compute_bench --viewport [--threads 2] [--repeats 3] [--max-batch 72] [--max-margin 8]

Part 1, in process (no servers: local tile cache, in-process leases, LR TIFFs on disk), so
the numbers are the engine's and the model's: output Mpx/s per worker, interactive latency
while background work is queued (priority vs plain FIFO), what preemption costs the
background job. Upscalers: bicubic (the fallback) and the production generator
architecture with untrained weights (``sr-cascade-small``: same compute cost as the trained
model; the pixels are meaningless, timing only). Trained weights are used when model_zoo
has them.

Part 2, on a real stack of its own (Kafka, MinIO, FerretDB on ports 39192..., temp state):
compute worker processes (``python -m slidestream.compute_worker``, bicubic) in one consumer group;
a whole-slide job with one and with two workers, and interactive round trips
(request -> upscale.done) with and without a background backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.report import machine, percentiles, stack_state_dir, table
from compute.engine import ComputeEngine, EngineConfig
from compute.samples import downsample, load_rgb, shared_images, tile_mosaic, write_lr_slide
from compute.slides import DirectorySlides
from compute.tile_cache import DirectoryTileCache
from compute.tile_leases import LocalLeases
from compute.upscaler import InterpolationUpscaler, ModelUpscaler, Upscaler, window_margin
from core.settings import Settings, get_settings
from schemas.events import Event, Region, TileRef, UpscaleDone, UpscaleFailed, UpscaleRequested
from schemas.layout import lr_key

if TYPE_CHECKING:
    from model_zoo.inference import SuperResolver

EXAM = "BENCH-EXAM"


# --- inputs ---------------------------------------------------------------------------


def lr_mosaic(settings: Settings, side_images: int) -> np.ndarray:
    """An LR slide from real H&E: side_images^2 MoNuSeg tiles (40x) area-reduced by 4."""
    paths = shared_images(settings.shared_data)
    need = side_images * side_images
    if not paths:
        raise SystemExit("shared H&E data not found (settings.shared_data)")
    images = [downsample(load_rgb(paths[i % len(paths)]), 4) for i in range(need)]
    return tile_mosaic(images, columns=side_images)


def model_resolver() -> tuple[SuperResolver, str]:
    """model_zoo's default model and its label; untrained when no weights (same cost)."""
    from model_zoo.inference import SuperResolver

    try:
        from model_zoo import load_model

        return load_model(), "sr-cascade-small (trained)"
    except Exception:  # noqa: BLE001 - no weights: time the architecture untrained
        from model_zoo.architecture import CascadeGenerator
        from model_zoo.registry import ARCHITECTURES

        resolver = SuperResolver(CascadeGenerator(ARCHITECTURES["small"]), name="untrained")
        return resolver, "sr-cascade-small (untrained, timing only)"


def upscalers(threads: int) -> list[Upscaler]:
    import torch

    torch.set_num_threads(threads)
    return [InterpolationUpscaler(), ModelUpscaler(*model_resolver())]


# --- part 1: in process -----------------------------------------------------------------


class LocalRig:
    """One engine on local storage; ``run`` feeds requests and times every answer."""

    def __init__(self, root: Path, upscaler: Upscaler, max_batch: int, blocks: bool = True,
                 max_margin: int | None = None) -> None:
        self.root = root
        self.cache_root = root / f"hr-{uuid.uuid4().hex[:6]}"
        self.engine = ComputeEngine(upscaler=upscaler, slides=DirectorySlides(root / "lr"),
                                    cache=DirectoryTileCache(self.cache_root),
                                    leases=LocalLeases(), publish=self._publish,
                                    config=EngineConfig(max_batch=max_batch, blocks=blocks, max_margin=max_margin))
        self.finished_at: dict[uuid.UUID, float] = {}
        self.hooks: list[Callable[[Event], None]] = []

    async def _publish(self, event: Event) -> None:
        if isinstance(event, UpscaleDone | UpscaleFailed) and event.remaining == 0:
            self.finished_at[event.request_id] = time.perf_counter()
        for hook in self.hooks:
            hook(event)

    async def run(self, *requests: UpscaleRequested) -> float:
        task = asyncio.create_task(self.engine.run())
        t0 = time.perf_counter()
        for r in requests:
            await self.engine.submit(r)
        await self.engine.wait_idle()
        elapsed = time.perf_counter() - t0
        self.engine.stop()
        await task
        return elapsed


def whole_slide_requests(width: int, height: int, scale: int, priority: str, chunk: int = 16) -> list[UpscaleRequested]:
    from compute.plan import SlideGeometry
    from compute.wholeslide import plan_chunks

    return [UpscaleRequested(exam_id=EXAM, slide_number=1, scale=scale, priority=priority, tiles=c)
            for c in plan_chunks(SlideGeometry(width, height), scale, chunk)]


def interactive_requests(width: int, height: int, scale: int, count: int, start: int = 0) -> list[UpscaleRequested]:
    """One tile each, on slide 2 (nothing of it is cached), spread over the slide."""
    from compute.plan import SlideGeometry

    geo = SlideGeometry(width, height)
    level = geo.top_level(scale)
    cols, rows = geo.grid(scale, level)
    cells = [(c, r) for r in range(rows) for c in range(cols)]
    picks = [cells[(i * 7919) % len(cells)] for i in range(start, start + count)]
    return [UpscaleRequested(exam_id=EXAM, slide_number=2, scale=scale, priority="interactive",
                             tiles=[TileRef(level=level, col=c, row=r)]) for c, r in picks]


async def latency_under_backlog(root: Path, up: Upscaler, background: list[UpscaleRequested],
                                inter: list[UpscaleRequested], max_batch: int) -> list[float]:
    """Interactive requests arriving evenly while ``background`` runs; their latencies (ms)."""
    rig = LocalRig(root, up, max_batch)
    total_batches = sum(len(r.tiles or []) for r in background) // max_batch
    spacing = max(1, total_batches // (len(inter) + 1))
    pending = list(inter)
    sent: dict[uuid.UUID, float] = {}
    batches = 0

    def on_event(event: Event) -> None:
        nonlocal batches
        if isinstance(event, UpscaleDone) and event.request_id not in sent:
            batches += 1
            if batches % spacing == 0 and pending:
                request = pending.pop(0)
                sent[request.request_id] = time.perf_counter()
                asyncio.get_running_loop().create_task(rig.engine.submit(request))

    rig.hooks.append(on_event)
    await rig.run(*background)
    return [1000 * (rig.finished_at[i] - t) for i, t in sent.items() if i in rig.finished_at]


async def local_part(settings: Settings, quick: bool, threads: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="compute-bench-"))
    try:
        lr = lr_mosaic(settings, 2)  # 500 x 500 px LR: 16 x 16 tiles at x8
        h, w = lr.shape[:2]
        write_lr_slide(lr, root / "lr" / lr_key(EXAM, 1))
        write_lr_slide(lr, root / "lr" / lr_key(EXAM, 2))
        scale, max_batch = 8, 8
        n_interactive = 8 if quick else 16
        rows_tp, rows_lat, rows_pre = [], [], []
        for up in upscalers(threads):
            slow = not isinstance(up, InterpolationUpscaler)
            chunks = whole_slide_requests(w, h, scale, "background")  # 16 tiles each
            # throughput: whole slide (bicubic) or a part of it (model on CPU)
            rig = LocalRig(root, up, max_batch)
            seconds = await rig.run(*(chunks[: (4 if quick else 8)] if slow else chunks))
            stats = rig.engine.stats
            rows_tp.append([up.name, stats.tiles_computed, seconds, stats.output_pixels / 1e6 / seconds,
                            1000 * stats.compute_s / stats.tiles_computed, 1000 * seconds / stats.tiles_computed])

            background = chunks[: (3 if quick else 6)] if slow else chunks
            bg_tiles = sum(len(r.tiles or []) for r in background)
            for mode in ("priority", "fifo"):
                inter = interactive_requests(w, h, scale, n_interactive)
                if mode == "fifo":  # the same work in one class: arrival order only
                    inter = [r.model_copy(update={"priority": "background"}) for r in inter]
                lat = await latency_under_backlog(root, up, background, inter, max_batch)
                p50, p95 = percentiles(lat)
                rows_lat.append([up.name, mode, len(lat), bg_tiles, p50, p95])

            # cost of preemption: one background request alone, then the same with an
            # interactive request arriving after each of its batches (each one preempts it)
            job = UpscaleRequested(exam_id=EXAM, slide_number=1, scale=scale, priority="background",
                                   tiles=[t for r in background for t in r.tiles or []])
            t_bg = await LocalRig(root, up, max_batch).run(job)
            alone = LocalRig(root, up, max_batch)
            t_i = 0.0
            for request in interactive_requests(w, h, scale, n_interactive):
                t_i += await alone.run(request)
            mixed = LocalRig(root, up, max_batch)
            queue = interactive_requests(w, h, scale, n_interactive)

            def inject(event: Event, mixed: LocalRig = mixed, queue: list = queue, job: UpscaleRequested = job) -> None:
                if isinstance(event, UpscaleDone) and event.request_id == job.request_id and queue:
                    asyncio.get_running_loop().create_task(mixed.engine.submit(queue.pop(0)))

            mixed.hooks.append(inject)
            t_mix = await mixed.run(job)
            pre = mixed.engine.stats.preemptions
            delay = (t_mix - t_bg) / max(pre, 1)
            each = t_i / n_interactive
            rows_pre.append([up.name, bg_tiles, pre, t_bg, t_mix, 1000 * delay, 1000 * each, 1000 * (delay - each)])

        print(f"In process, one worker, x8, batch {max_batch}, LR {w}x{h} (real H&E), torch threads {threads}"
              f" ({machine()})\n")
        print(table(["upscaler", "tiles", "s", "output Mpx/s", "model ms/tile", "total ms/tile"], rows_tp))
        print("\nInteractive latency (submit -> last answer), 1 tile each, arriving evenly while the "
              "background tiles are processed: priority classes vs plain FIFO\n")
        print(table(["upscaler", "scheduling", "requests", "background tiles", "p50 (ms)", "p95 (ms)"], rows_lat))
        print("\nCost of preemption: one background request alone, then with an interactive 1-tile "
              "request arriving after each of its batches. Delay = what each preemption adds to the "
              "background job; the interactive batch itself accounts for most of it\n")
        print(table(["upscaler", "bg tiles", "preemptions", "bg alone (s)", "bg preempted (s)",
                     "delay per preemption (ms)", "1-tile interactive batch (ms)", "switch overhead (ms)"],
                    rows_pre))
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- viewport: the model alone vs the service --------------------------------------------

VIEWPORT = (8, 5)  # 1920 x 1080 px at 40x in 256-px tiles
RING = 1  # prefetch ring around the viewport, in tiles
MODEL_LR_SIZE = 256  # the model alone: model_zoo.bench's input, one window without margins
# A viewport request is interactive: its batches have the interactive batch size of the settings.
VIEWPORT_MAX_BATCH = get_settings().compute.interactive_max_batch


class CountingUpscaler:
    """Delegates to an upscaler and counts model calls and windows (model inputs)."""

    def __init__(self, inner: Upscaler) -> None:
        self.inner = inner
        self.name = inner.name
        self.context_margin = inner.context_margin
        self.margin_cap = getattr(inner, "margin_cap", None)  # the measured cap the engine applies
        self.calls = self.windows = 0

    def margin_for(self, scale: int) -> int:
        return self.inner.margin_for(scale)

    def window_bytes(self, height: int, width: int, scale: int) -> int:
        from compute.upscaler import window_bytes

        return window_bytes(self.inner, height, width, scale)

    def upscale_batch(self, images: list[np.ndarray], scale: int) -> list[np.ndarray]:
        self.calls += 1
        self.windows += len(images)
        return self.inner.upscale_batch(images, scale)


def viewport_request(width: int, height: int, scale: int) -> UpscaleRequested:
    """The viewport's tiles (top level, one tile in from the corner) then its prefetch ring."""
    from compute.plan import SlideGeometry

    geo = SlideGeometry(width, height)
    (cols, rows), level = VIEWPORT, geo.top_level(scale)
    col0, row0 = RING, RING
    inner = [(c, r) for r in range(row0, row0 + rows) for c in range(col0, col0 + cols)]
    ring = [(c, r) for r in range(row0 - RING, row0 + rows + RING) for c in range(col0 - RING, col0 + cols + RING)
            if (c, r) not in inner]
    if max(c for c, _ in ring) >= geo.grid(scale, level)[0] or max(r for _, r in ring) >= geo.grid(scale, level)[1]:
        raise SystemExit(f"LR {width}x{height} is too small for the viewport at x{scale}")
    return UpscaleRequested(exam_id=EXAM, slide_number=1, scale=scale, priority="interactive",
                            tiles=[TileRef(level=level, col=c, row=r) for c, r in inner + ring])


@dataclass(frozen=True)
class ServicePath:
    label: str
    blocks: bool
    max_margin: int | None = None


@dataclass
class ServiceRun:
    mpx_s: float
    calls: int
    windows: int
    cache: Path  # where its tiles are


async def service_run(root: Path, up: Upscaler, request: UpscaleRequested, max_batch: int, path: ServicePath
                      ) -> ServiceRun:
    """One viewport request on a fresh engine and tile cache."""
    counting = CountingUpscaler(up)
    rig = LocalRig(root, counting, max_batch, blocks=path.blocks, max_margin=path.max_margin)  # type: ignore[arg-type]  # an Upscaler by protocol
    seconds = await rig.run(request.model_copy(update={"request_id": uuid.uuid4()}))
    return ServiceRun(rig.engine.stats.output_pixels / 1e6 / seconds, counting.calls, counting.windows, rig.cache_root)


def tiles_differ(a: Path, b: Path) -> str:
    """Worst PSNR and largest difference between the tiles of two runs (same keys)."""
    from compute.codec import decode_png

    worst, largest = float("inf"), 0
    for path in sorted(a.rglob("*.png")):
        x = decode_png(path.read_bytes()).astype(np.float64)
        y = decode_png((b / path.relative_to(a)).read_bytes()).astype(np.float64)
        mse = float(np.mean((x - y) ** 2))
        worst = min(worst, float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse))
        largest = max(largest, int(np.abs(x - y).max()))
    return "identical to exact" if largest == 0 else f"vs exact: >= {worst:.0f} dB, max diff {largest}"


async def viewport_part(settings: Settings, threads: int, repeats: int, max_batch: int,
                        max_margin: int | None) -> None:
    """Model alone (large input, same threads) and the service on a viewport request, side by
    side. Each repeat times the model right before each service path, so the load of a
    shared machine hits both alike: the ratio column is the median of those pairs."""
    import statistics

    import torch

    from model_zoo.bench import output_mpx_per_second

    torch.set_num_threads(threads)
    resolver, label = model_resolver()
    up = ModelUpscaler(resolver, label)
    # The exact paths name the model's whole declared margin: None would mean "as deployed"
    # (compute.max_margin, else the registry's measured cap; compute.upscaler.window_margin).
    full = up.context_margin
    paths = [ServicePath("service, blocks", True, full), ServicePath("service, one window per tile", False, full)]
    if max_margin != 0:
        paths.insert(1, ServicePath("service, blocks, capped margin", True, max_margin))
    root = Path(tempfile.mkdtemp(prefix="compute-bench-viewport-"))
    rows: list[list[object]] = []
    try:
        lr = lr_mosaic(settings, 3)  # 750 x 750 LR: room for the viewport and its ring at x4
        write_lr_slide(lr, root / "lr" / lr_key(EXAM, 1))
        for scale in (8, 4):
            request = viewport_request(lr.shape[1], lr.shape[0], scale)
            for path in paths:
                await service_run(root, up, request, max_batch, path)  # warm-up: new window shapes
            model: list[float] = []
            runs: dict[ServicePath, list[ServiceRun]] = {path: [] for path in paths}
            ratios: dict[ServicePath, list[float]] = {path: [] for path in paths}
            for _ in range(repeats):
                for path in paths:
                    model.append(output_mpx_per_second(resolver, scale, MODEL_LR_SIZE, 1)[0])
                    runs[path].append(await service_run(root, up, request, max_batch, path))
                    ratios[path].append(runs[path][-1].mpx_s / model[-1])
            rows.append([f"x{scale}", "model alone", max(model), statistics.median(model), "", "", ""])
            exact = runs[paths[0]][-1].cache
            for path in paths:
                mpx = [r.mpx_s for r in runs[path]]
                last = runs[path][-1]
                note = f"{last.calls} model calls, {last.windows} windows"
                if path.max_margin != full:
                    margin = window_margin(up, scale, path.max_margin)
                    note += f"; margin {margin} px, " + tiles_differ(exact, last.cache)
                rows.append([f"x{scale}", path.label, max(mpx), statistics.median(mpx), f"{max(mpx) / max(model):.0%}",
                             f"{statistics.median(ratios[path]):.0%}", note])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cols, rows_ = VIEWPORT
    print(f"Viewport {cols}x{rows_} tiles + a {RING}-tile prefetch ring in one interactive request "
          f"({(cols + 2 * RING) * (rows_ + 2 * RING)} tiles), one in-process worker (local tile cache and leases), "
          f"{up.name}, torch threads {threads}, max_batch {max_batch}. Model alone: SuperResolver.upscale of "
          f"{MODEL_LR_SIZE}x{MODEL_LR_SIZE} LR (as model_zoo.bench). {repeats} repeats "
          f"({machine()}, load average {os.getloadavg()[0]:.1f} at the end)\n")
    print(table(["scale", "path", "output Mpx/s best", "median", "best / model best", "/ model, paired median",
                 "windows"], rows))


# --- part 2: on the stack ---------------------------------------------------------------

PORTS = {
    "SLIDESTREAM_KAFKA__PORT": "39192",
    "SLIDESTREAM_KAFKA__CONTROLLER_PORT": "39193",
    "SLIDESTREAM_STORAGE__PORT": "39194",
    "SLIDESTREAM_STORAGE__CONSOLE_PORT": "39195",
    "SLIDESTREAM_MONGO__PORT": "39196",
}


def start_compute_workers(settings: Settings, count: int, workdir: Path) -> list:
    from infra import process

    procs = []
    for i in range(count):
        argv = [sys.executable, "-m", "slidestream.compute_worker", "worker", "--loglevel", "warning"]
        env = {"SLIDESTREAM_APP_ID": settings.app_id, "SLIDESTREAM_COMPUTE__MODEL": "bicubic",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        pid = workdir / f"{settings.app_id}-{i}.pid"
        process.spawn(argv, log_path=workdir / f"{settings.app_id}-{i}.log", pid_path=pid, env=env, cwd=workdir)
        procs.append(pid)
    return procs


def stop_compute_workers(pids: list) -> None:
    from infra import process

    for pid in pids:
        process.stop(pid, grace_s=30)


async def wait_for_workers(settings: Settings, exam: str, timeout: float = 300) -> None:
    """Until an interactive request gets answered (workers joined and warmed up)."""
    from core.upscale_client import upscale_tiles

    deadline = time.monotonic() + timeout
    while True:
        probe = UpscaleRequested(exam_id=exam, slide_number=1, scale=2, priority="interactive",
                                 region=Region(x=0, y=0, width=64, height=64))
        try:
            await upscale_tiles(settings, probe, timeout_s=60)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


async def interactive_round_trips(settings: Settings, exam: str, count: int, width: int, height: int,
                                  spacing_s: float, still_busy: Callable[[], bool] = lambda: True,
                                  start: int = 0) -> list[float]:
    """One request at a time (one tile), timed from send to its last answer."""
    from core.upscale_client import UpscaleClient

    reqs = [r.model_copy(update={"exam_id": exam}) for r in interactive_requests(width, height, 8, count, start)]
    latencies = []
    async with UpscaleClient(settings) as client:
        for r in reqs:
            if not still_busy():
                break
            expected = client.expect([r.request_id])
            t0 = time.perf_counter()
            await client.send([(r, None)])
            await expected.collect(timeout_s=60)
            latencies.append(1000 * (time.perf_counter() - t0))
            client.forget(expected)
            await asyncio.sleep(spacing_s)
    return latencies


async def stack_part(settings: Settings, quick: bool) -> None:
    from compute.samples import store_sample_slide
    from compute.wholeslide import generate_whole_slide

    lr = lr_mosaic(settings, 3 if quick else 4)  # 750 or 1000 px LR: 576 or 1024 tiles at x8
    h, w = lr.shape[:2]
    workdir = Path(tempfile.mkdtemp(prefix="compute-bench-workers-"))
    rows_ws, rows_lat = [], []
    n = 10 if quick else 20
    try:
        for count in (1, 2):
            group = settings.model_copy(update={"app_id": f"bench-compute-{count}-{uuid.uuid4().hex[:4]}"})
            exam = f"BENCH-{count}-{uuid.uuid4().hex[:6]}"
            await store_sample_slide(settings, exam, 1, lr)
            await store_sample_slide(settings, exam, 2, lr)
            pids = start_compute_workers(group, count, workdir)
            try:
                await wait_for_workers(group, exam)
                idle = await interactive_round_trips(group, exam, n, w, h, 0.1)
                progress: list = []
                job = asyncio.create_task(generate_whole_slide(group, exam, 1, 8, chunk_tiles=16,
                                                               on_progress=progress.append))
                while not progress and not job.done():  # the backlog is queued and being worked on
                    await asyncio.sleep(0.05)
                # other tiles than the idle round's (none of slide 2 is cached)
                busy = await interactive_round_trips(group, exam, n, w, h, 0.2, still_busy=lambda j=job: not j.done(),
                                                     start=n)
                result = await job
            finally:
                stop_compute_workers(pids)
            mpx = result.width * result.height / 1e6
            rows_ws.append([count, result.tiles, result.compute_s, mpx / result.compute_s,
                            mpx / result.compute_s / count, result.stitch_s])
            for label, lat in (("idle", idle), ("whole-slide job running", busy)):
                if lat:
                    p50, p95 = percentiles(lat)
                    rows_lat.append([count, label, len(lat), p50, p95, max(lat)])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nOn the stack: compute worker processes (bicubic), whole slide x8 from LR {w}x{h} "
          f"({machine()})\n")
    print(table(["workers", "tiles", "compute (s)", "output Mpx/s", "Mpx/s per worker", "stitch (s)"], rows_ws))
    print("\nInteractive round trip (send upscale.requested -> last upscale.done), 1 tile each\n")
    print(table(["workers", "queue", "requests", "p50 (ms)", "p95 (ms)", "max (ms)"], rows_lat))


def with_stack(quick: bool) -> None:
    from infra import stack

    state_dir = stack_state_dir("compute-bench-stack-")
    os.environ.update(PORTS)
    os.environ["SLIDESTREAM_STATE_DIR"] = str(state_dir)
    get_settings.cache_clear()
    settings = get_settings()
    try:
        stack.up(settings, echo=lambda _m: None)
        asyncio.run(stack_part(settings, quick))
    finally:
        stack.down(settings, echo=lambda _m: None)
        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller slides and fewer requests")
    parser.add_argument("--skip-stack", action="store_true", help="only the in-process part")
    parser.add_argument("--skip-local", action="store_true", help="only the stack part")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per worker (default 1; 2 with --viewport)")
    parser.add_argument("--viewport", action="store_true",
                        help="only: the model alone vs the service on a viewport request, x8 and x4")
    parser.add_argument("--repeats", type=int, default=3, help="--viewport: timed runs of each path")
    parser.add_argument("--max-batch", type=int, default=VIEWPORT_MAX_BATCH,
                        help="--viewport: tiles per batch (and per window); default: compute.interactive_max_batch")
    parser.add_argument("--max-margin", type=int, default=get_settings().compute.max_margin,
                        help="--viewport: also time blocks with the context margin capped at this "
                             "(default: as deployed, the model's measured cap; 0: skip)")
    args = parser.parse_args(argv)
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.viewport:
        asyncio.run(viewport_part(get_settings(), args.threads or 2, args.repeats, args.max_batch,
                                 args.max_margin))
        return 0
    if not args.skip_local:
        asyncio.run(local_part(get_settings(), args.quick, args.threads or 1))
    if not args.skip_stack:
        with_stack(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
