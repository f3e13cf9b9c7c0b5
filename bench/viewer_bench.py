"""The viewer under simulated pathologists: tile latency, time to a sharp 40x screen, pans.

    python -m bench.viewer_bench [--quick]

Runs its own stack (ports 39292.., temp state), the viewer (``slidestream viewer``) and one
compute worker with the default model (2 threads) as processes, on an LR slide of 5x H&E
(MoNuSeg 40x images downsampled x8 and tiled). Simulated viewers are HTTP clients doing what
the browser does: fetch the visible tiles of a 1920x1080 screen over at most 6 connections (a
browser's limit per host), follow the SSE news, tell the viewer the viewport (prefetch), pan.

* LR tiles, hr-cache hits: per-tile latency at 1, 4 and 16 concurrent viewers panning.
* On-demand misses: tile requested (placeholder) -> computed tile announced.
* Sharp 40x screen: open a slide at a fresh place -> every visible 40x tile computed.
* Pan one screen right, sharp again: with the ring prefetched while reading, and without.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import httpx
import numpy as np

from bench.report import machine, own_stack, percentiles, table
from core.settings import Settings
from schemas.layout import TILE_SIZE, tile_grid

PORTS = {
    "SLIDESTREAM_KAFKA__PORT": "39292",
    "SLIDESTREAM_KAFKA__CONTROLLER_PORT": "39293",
    "SLIDESTREAM_STORAGE__PORT": "39294",
    "SLIDESTREAM_STORAGE__CONSOLE_PORT": "39295",
    "SLIDESTREAM_MONGO__PORT": "39296",
    "SLIDESTREAM_VIEWER__PORT": "39297",
}
SCREEN = (1920, 1080)
BROWSER_CONNECTIONS = 6
EXAM = "BENCH-VIEWER"


def lr_slide(settings: Settings, columns: int, rows: int) -> np.ndarray:
    from compute.samples import downsample, load_rgb, shared_images, tile_mosaic

    paths = shared_images(settings.shared_data)
    tiles = [downsample(load_rgb(paths[i % len(paths)]), 8) for i in range(columns * rows)]
    side = min(min(t.shape[:2]) for t in tiles)
    return tile_mosaic([t[:side, :side] for t in tiles], columns)


class Viewer:
    """One simulated browser: a signed-in client and the slide's news stream."""

    def __init__(self, client: httpx.AsyncClient, tiles: aiohttp.ClientSession, headers: dict[str, str],
                 info: dict) -> None:
        self.client = client
        self.tiles = tiles
        self.connections = asyncio.Semaphore(BROWSER_CONNECTIONS)
        self.headers = headers
        self.info = info
        self.files = info["dzi_url"].removesuffix(".dzi") + "_files"
        self.announced: dict[tuple[int, int, int], float] = {}
        self.fetched: set[tuple[int, int, int]] = set()  # what a browser's own cache would hold
        self._news: asyncio.Task[None] | None = None

    async def follow_news(self) -> None:
        ready = asyncio.Event()

        async def read() -> None:
            async with self.client.stream("GET", self.info["events_url"], headers=self.headers,
                                          timeout=None) as stream:
                async for line in stream.aiter_lines():
                    ready.set()
                    if line.startswith("data: "):
                        now = time.perf_counter()
                        for t in json.loads(line[6:]).get("tiles", []):
                            self.announced.setdefault((t["level"], t["col"], t["row"]), now)

        self._news = asyncio.create_task(read())
        await asyncio.wait_for(ready.wait(), 30)

    async def close(self) -> None:
        if self._news is not None:
            self._news.cancel()

    async def tile(self, level: int, col: int, row: int) -> tuple[float, str, bool]:
        """Latency of one tile from when a connection is free (as a browser's network panel
        shows), its source, and whether this viewer fetches it for the first time. Tiles are
        asked again on every step, as if the browser kept none: the first fetches alone are
        what a browser that keeps its tiles (OpenSeadragon does) would ask for."""
        async with self.connections:
            t0 = time.perf_counter()
            async with self.tiles.get(f"{self.files}/{level}/{col}_{row}.jpeg", headers=self.headers) as reply:
                reply.raise_for_status()
                await reply.read()
                ms = 1000 * (time.perf_counter() - t0)
                source = reply.headers["x-tile-source"]
        first = (level, col, row) not in self.fetched
        if source != "placeholder":
            self.fetched.add((level, col, row))
        return ms, source, first

    def screen(self, level: int, x: int, y: int) -> list[tuple[int, int, int]]:
        """Tiles of a screen at (x, y) of ``level``, clipped to the level."""
        cols, rows = tile_grid(self.info["width"], self.info["height"], level)
        w, h = SCREEN
        return [(level, c, r) for r in range(y // TILE_SIZE, min(rows, (y + h - 1) // TILE_SIZE + 1))
                for c in range(x // TILE_SIZE, min(cols, (x + w - 1) // TILE_SIZE + 1))]

    async def show(self, level: int, x: int, y: int) -> list[tuple[float, str, bool]]:
        return list(await asyncio.gather(*(self.tile(*t) for t in self.screen(level, x, y))))

    async def sharp(self, level: int, x: int, y: int, *, prefetch: bool,
                    timeout: float = 120) -> tuple[float, list[float]]:
        """Seconds from asking for the screen until every tile of it is computed, and each
        placeholder's wait (ms) until its tile was announced."""
        t0 = time.perf_counter()
        tiles = self.screen(level, x, y)
        answers = await self.show(level, x, y)
        if prefetch:
            await self.viewport(level, x, y)
        waiting = {t for t, (_, source, _) in zip(tiles, answers, strict=True) if source == "placeholder"}
        while waiting - set(self.announced):
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{len(waiting - set(self.announced))} tiles never announced")
            await asyncio.sleep(0.01)
        return time.perf_counter() - t0, [1000 * (self.announced[t] - t0) for t in waiting]

    async def viewport(self, level: int, x: int, y: int) -> None:
        body = {"level": level, "x": x, "y": y, "width": SCREEN[0], "height": SCREEN[1]}
        (await self.client.post(self.info["events_url"].removesuffix("/events") + "/viewport", json=body,
                                headers=self.headers)).raise_for_status()


async def pan_latencies(viewers: list[Viewer], level: int, start_y: int, steps: int) -> list[tuple[float, bool]]:
    """Every viewer pans right half a screen per step over ``level``; per-tile latencies (ms)
    and whether it was the viewer's first fetch of the tile."""
    async def one(index: int, v: Viewer) -> list[tuple[float, bool]]:
        out = []
        y = start_y + (index % 4) * TILE_SIZE
        for step in range(steps):
            out += [(ms, first) for ms, _, first in await v.show(level, step * SCREEN[0] // 2, y)]
        return out

    return [s for part in await asyncio.gather(*(one(i, v) for i, v in enumerate(viewers))) for s in part]


def latency_rows(kind: str, viewers: int, samples: list[tuple[float, bool]]) -> list[list[object]]:
    """All requests, and the first fetches alone (at one viewer: nothing warmed by others)."""
    rows: list[list[object]] = [[kind, viewers, len(samples), *percentiles([ms for ms, _ in samples])]]
    first = [ms for ms, is_first in samples if is_first]
    if viewers == 1 and first:
        rows.append([f"{kind}, first fetch", viewers, len(first), *percentiles(first)])
    return rows


@asynccontextmanager
async def viewers(url: str, headers: dict[str, str], info: dict, count: int) -> AsyncIterator[list[Viewer]]:
    limits = httpx.Limits(max_connections=8 * count, max_keepalive_connections=8 * count)
    # Tiles through aiohttp (C HTTP parser): the simulated browsers share the viewer's two
    # cores, and httpx spent ~3 ms of CPU per tile there, three times the viewer's own, which
    # the latencies then showed as server time. A browser's network stack runs elsewhere.
    connector = aiohttp.TCPConnector(limit=BROWSER_CONNECTIONS * count)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client, \
            aiohttp.ClientSession(base_url=url, connector=connector,
                                  timeout=aiohttp.ClientTimeout(total=120)) as tiles:
        group = [Viewer(client, tiles, headers, info) for _ in range(count)]
        for v in group:
            await v.follow_news()
        try:
            yield group
        finally:
            for v in group:
                await v.close()


async def run(settings: Settings, quick: bool, workdir: Path) -> None:
    from compute.samples import store_sample_slide
    from core.upscale_client import upscale_tiles
    from schemas.events import Region, UpscaleRequested
    from slidestream.demo.viewer import demo_account
    from slidestream.viewer_process import start_viewer, stop_viewer, viewer_log
    from viewer.users_admin import assign

    columns, rows = (12, 8) if quick else (16, 12)
    pixels = lr_slide(settings, columns, rows)
    await store_sample_slide(settings, EXAM, 1, pixels)
    password = await demo_account(settings, "bench.reader", "pathologist", "Bench")
    await assign(settings, EXAM, pathologist="bench.reader", department=None, actor="bench")
    worker = start_worker(settings, workdir)
    start_viewer(settings)
    url = f"http://{settings.viewer.host}:{settings.viewer.port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            login = await client.post("/api/auth/login", json={"username": "bench.reader", "password": password})
            headers = {"Authorization": f"Bearer {login.json()['token']}"}
            info = (await client.get(f"/api/slides/{EXAM}/1", headers=headers)).json()
            top, lr_level = info["max_level"], info["lr_level"]
            # Warm up the worker (model load) with a tile nobody measures.
            await upscale_tiles(settings, UpscaleRequested(exam_id=EXAM, slide_number=1, scale=info["scale"],
                                                           priority="interactive",
                                                           region=Region(x=0, y=info["height"] - 256, width=256,
                                                                         height=256)), timeout_s=300)
            # hr-cache content for the hit measurements: the band of 40x tiles the pans cover.
            steps = 4 if quick else 6
            band = Region(x=0, y=0, width=min(info["width"], steps * SCREEN[0] // 2 + SCREEN[0]),
                          height=SCREEN[1] + 4 * TILE_SIZE)
            await upscale_tiles(settings, UpscaleRequested(exam_id=EXAM, slide_number=1, scale=info["scale"],
                                                           priority="background", region=band), timeout_s=900)
            rows_lat = []
            for count in (1, 4, 16):
                async with viewers(url, headers, info, count) as group:
                    lr = await pan_latencies(group, lr_level - 1, 0, steps)
                    lr += await pan_latencies(group, lr_level, 0, steps)
                    rows_lat += latency_rows("LR tile", count, lr)
                    hits = await pan_latencies(group, top, 0, steps)
                    rows_lat += latency_rows("hr-cache hit", count, hits)
            sharp: list[float] = []
            misses: list[float] = []
            pans: dict[bool, list[float]] = {True: [], False: []}
            async with viewers(url, headers, info, 1) as (v,):
                for i in range(3 if quick else 5):  # fresh places below the band, never computed
                    x = (i % 2) * 2 * SCREEN[0]
                    y = band.height + TILE_SIZE + i * 5 * TILE_SIZE
                    (await client.get(f"/api/slides/{EXAM}/1", headers=headers)).raise_for_status()
                    seconds, waits = await v.sharp(top, x, y, prefetch=i % 2 == 0)
                    sharp.append(seconds)
                    misses += waits
                    await asyncio.sleep(3.0)  # the pathologist reads the screen; prefetch runs meanwhile
                    pans[i % 2 == 0].append((await v.sharp(top, x + SCREEN[0], y, prefetch=False))[0])
    except BaseException:
        from infra import process

        print(f"viewer log:\n{process.tail(viewer_log(settings), 40)}", file=sys.stderr)
        raise
    finally:
        stop_worker(worker)
        stop_viewer(settings)
    print(f"\nViewer on {machine()}: LR {pixels.shape[1]}x{pixels.shape[0]} at 5x, 40x = x8, "
          f"default model, 1 compute worker (2 threads), screen {SCREEN[0]}x{SCREEN[1]}\n")
    print(table(["tiles", "viewers", "requests", "p50 (ms)", "p95 (ms)"], rows_lat))
    print()
    print(table(["measure", "samples", "p50 (s)", "p95 (s)"], [
        ["on-demand miss: asked -> announced", len(misses), *(m / 1000 for m in percentiles(misses))],
        ["open -> sharp 40x screen", len(sharp), *percentiles(sharp)],
        ["pan one screen -> sharp, with prefetch", len(pans[True]), *percentiles(pans[True])],
        ["pan one screen -> sharp, no prefetch", len(pans[False]), *percentiles(pans[False])],
    ]))


def start_worker(settings: Settings, workdir: Path) -> Path:
    from infra import process

    pid = workdir / "compute-worker.pid"
    env = {"SLIDESTREAM_COMPUTE__THREADS": "2", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process.spawn([sys.executable, "-m", "slidestream.compute_worker", "worker", "--loglevel", "warning"],
                  log_path=workdir / "compute-worker.log", pid_path=pid, env=env, cwd=workdir)
    return pid


def stop_worker(pid: Path) -> None:
    from infra import process

    process.stop(pid, grace_s=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller slide and fewer samples")
    args = parser.parse_args(argv)
    with own_stack("viewer-bench-", PORTS) as settings:
        asyncio.run(run(settings, args.quick, settings.state_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
