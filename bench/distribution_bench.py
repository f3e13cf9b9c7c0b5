"""Distribution to a reading terminal: from ``slide.stored`` to every 40x tile on the workstation.

    python -m bench distribution [--slides N] [--tiles-per-side C R]

Runs its own stack (ports 3940x, temp state), one agent worker (all agents: distribution,
upscale with the default model on CPU, tiering), the viewer (terminal API) and a registered
terminal, all as processes. A sample exam of N slides of 5x H&E (MoNuSeg 40x images
downsampled x8 and tiled) is stored; ``slide.stored`` is published for each slide, and the
clock runs until ``slidestream terminal run --once`` has every HR tile of the exam in its
local cache (checksummed).

Reported: seconds to ``distribution.assigned`` and to all HR tiles on the terminal; bytes
moved to the terminal (the HR tiles, lossless PNG) against shipping the exam as a 40x
scanner file (the same 40x pixels as 256-px JPEG tiles at quality 70 and 90, the top level
only, as in an SVS) and against shipping the stored 5x LR for SR on the workstation.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.report import machine, own_stack, table
from core.settings import Settings

PORTS = {
    "SLIDESTREAM_KAFKA__PORT": "39402",
    "SLIDESTREAM_KAFKA__CONTROLLER_PORT": "39403",
    "SLIDESTREAM_STORAGE__PORT": "39404",
    "SLIDESTREAM_STORAGE__CONSOLE_PORT": "39405",
    "SLIDESTREAM_MONGO__PORT": "39406",
    "SLIDESTREAM_VIEWER__PORT": "39407",
    "SLIDESTREAM_TERMINAL__PORT": "39408",
}
EXAM = "BENCH-DIST"
TERMINAL = "bench-terminal-1"


def _cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slidestream", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _scanner_bytes(tiles: list[Path], quality: int) -> int:
    """The same 40x pixels as a scanner would ship them: 256-px JPEG tiles at ``quality``."""
    total = 0
    for path in tiles:
        with Image.open(path) as image:
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=quality)
            total += out.tell()
    return total


async def run(settings: Settings, slides: int, columns: int, rows: int, workdir: Path) -> list[list[object]]:
    from bench.viewer_bench import lr_slide
    from compute.samples import store_sample_slide
    from core.kafka import KafkaSink, producer, tail_from_end
    from schemas.common import ObjectRef
    from schemas.events import DistributionAssigned, SlideStored
    from schemas.layout import sr_levels
    from schemas.topics import Topic
    from slidestream.viewer_process import start_viewer, stop_viewer
    from slidestream.workers import start_workers, stop_workers

    key_file = workdir / "terminal.key"
    registered = _cli("terminal", "register", "--id", TERMINAL, "--task-classes", "general", "--capacity", "1000",
                      "--owner-department", "Bench", "--key-file", str(key_file))
    if registered.returncode != 0:
        raise RuntimeError(f"terminal register failed: {registered.stderr.strip()}")
    images = []
    for number in range(1, slides + 1):
        pixels = lr_slide(settings, columns, rows)
        pixels = np.roll(pixels, number * 97, axis=1)  # not the same slide twice
        images.append(await store_sample_slide(settings, EXAM, number, pixels))
    start_workers(settings, count=1)
    start_viewer(settings)
    server = f"http://{settings.viewer.host}:{settings.viewer.port}"
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}", "X-Terminal-Id": TERMINAL}
    cache_dir = workdir / "terminal-cache"
    try:
        async with httpx.AsyncClient(base_url=server, timeout=30) as client:
            (await client.post("/api/terminal/heartbeat", headers=headers)).raise_for_status()
        async with tail_from_end(settings, Topic.DISTRIBUTION_ASSIGNED.value, wait_s=30) as tail, \
                producer(settings) as prod:
            sink = KafkaSink(prod)
            t0 = time.perf_counter()
            for image in images:
                assert image.sha256 is not None and image.size_bytes is not None
                await sink(SlideStored(patient_id=image.patient_id, exam_id=image.exam_id,
                                       slide_number=image.slide_number, state=image.state, tier=image.tier,
                                       object=image.object, mirror=image.mirror or ObjectRef(
                                           bucket=image.object.bucket, key=image.object.key),
                                       sha256=image.sha256, size_bytes=image.size_bytes))
            assigned_s = None
            while assigned_s is None:
                batch = await tail.getmany(timeout_ms=1000)
                if time.perf_counter() - t0 > 300:
                    raise TimeoutError("no distribution.assigned within 300 s")
                for records in batch.values():
                    for record in records:
                        if b'"exam_id":"' + EXAM.encode() in record.value.replace(b" ", b""):
                            DistributionAssigned.model_validate_json(record.value)
                            assigned_s = time.perf_counter() - t0
        synced = await asyncio.to_thread(
            _cli, "terminal", "run", "--id", TERMINAL, "--key-file", str(key_file), "--server", server,
            "--cache-dir", str(cache_dir), "--once")
        local_s = time.perf_counter() - t0
        if synced.returncode != 0:
            raise RuntimeError(f"terminal run --once failed: {synced.stderr.strip()[-2000:]}")
    finally:
        stop_viewer(settings)
        stop_workers(settings)
    tiles = sorted(p for p in cache_dir.rglob("*.png"))
    moved = sum(p.stat().st_size for p in tiles)
    scale = 8
    top = {str(max(sr_levels(int(i.width or 0), int(i.height or 0), scale))) for i in images}
    top_tiles = [p for p in tiles if p.parent.name in top]
    lr_bytes = sum(int(i.size_bytes or 0) for i in images)
    hr_px = sum(int(i.width or 0) * int(i.height or 0) * scale * scale for i in images)
    print(f"\nDistribution on {machine()}: exam of {slides} slide(s), LR {images[0].width}x{images[0].height} at 5x, "
          f"40x = x8 ({hr_px / 1e6:.1f} Mpx), default model on CPU in one agent worker\n")
    print(table(["measure", "value"], [
        ["slide.stored -> distribution.assigned (s)", f"{assigned_s:.2f}"],
        ["slide.stored -> every HR tile on the terminal (s)", f"{local_s:.1f}"],
        ["HR tiles on the terminal", len(tiles)],
    ]))
    q70, q90 = _scanner_bytes(top_tiles, 70), _scanner_bytes(top_tiles, 90)
    rows_out: list[list[object]] = [
        ["HR tiles moved to the terminal (PNG, all SR levels)", moved, 1.0],
        ["40x scanner file, JPEG q90 tiles (top level)", q90, q90 / moved],
        ["40x scanner file, JPEG q70 tiles (top level)", q70, q70 / moved],
        ["5x LR as stored (for SR on the workstation)", lr_bytes, lr_bytes / moved],
    ]
    print()
    print(table(["bytes per exam", "bytes", "vs moved"], [[n, f"{b / 1e6:.2f} MB", f"{r:.2f}"] for n, b, r in rows_out]))
    return rows_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=2, help="slides in the sample exam")
    parser.add_argument("--tiles-per-side", type=int, nargs=2, default=(4, 3), metavar=("C", "R"),
                        help="MoNuSeg tiles (125 px at 5x) per slide across and down")
    args = parser.parse_args(argv)
    with own_stack("distribution-bench-", {**PORTS, "SLIDESTREAM_DISTRIBUTION__SWEEP_INTERVAL_S": "2"}) as settings:
        asyncio.run(run(settings, args.slides, *args.tiles_per_side, settings.state_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
