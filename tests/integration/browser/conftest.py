"""Fixtures of the browser tests: the real stack, the viewer and a compute worker as
processes, a seeded slide, and a headless chromium page on the viewer.

The browser is Debian's chromium (infra/ensure-browser.sh), driven by the Playwright Python
package; CHROMIUM=/path overrides /usr/bin/chromium. Playwright never downloads a browser here.
SLIDESTREAM_SCREENSHOT=path saves a 1600x1000 screenshot at 40x there (the README's picture).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from infra import process

# The strict Settings reject SLIDESTREAM_* variables that name no setting: this test-harness
# variable leaves the environment before anything builds Settings (as tests/conftest.py does).
SCREENSHOT_PATH = os.environ.pop("SLIDESTREAM_SCREENSHOT", None)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1600, "height": 1000}
LR_SIDE = 1200  # wide enough that the whole slide on screen is below 5x


@dataclass(frozen=True)
class ViewerTarget:
    url: str  # base URL, no trailing slash
    username: str
    password: str
    exam_id: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def five_x_slide(settings: Settings, side: int) -> bytes:
    """A real 5x LR: MoNuSeg's 40x H&E images reduced x8 and tiled, stored as production does
    (JPEG q90 4:4:4 pyramid), so that 40x is a true reconstruction of what was scanned."""
    import io

    from compute.samples import downsample, load_rgb, shared_images, tile_mosaic
    from slide_io.pyramid import Compression, write_pyramid

    paths = shared_images(settings.shared_data)
    parts = [downsample(load_rgb(path), 8) for path in paths[:16]]
    cell = min(min(p.shape[:2]) for p in parts)
    columns = -(-side // cell)
    mosaic = tile_mosaic([parts[i % len(parts)][:cell, :cell] for i in range(columns * columns)], columns)
    out = io.BytesIO()
    write_pyramid(mosaic[:side, :side].copy(), out, mpp=2.0, magnification=5.0, compression=Compression.JPEG)
    return out.getvalue()


@pytest.fixture(scope="module")
def viewer_target(stack: Settings) -> Iterator[ViewerTarget]:
    """A seeded exam on a pathologist's worklist; ``slidestream viewer`` and a compute worker
    as processes on the test stack. The worker interpolates (the test is about the UI, not the
    model), except when a screenshot is asked for: then it runs the shipped model."""
    from slidestream.viewer_process import start_viewer, stop_viewer, viewer_url
    from tests.integration.viewer_kit import seed

    seeded = asyncio.run(seed(stack, size=LR_SIDE, data=five_x_slide(stack, LR_SIDE)))
    user = seeded.user("path")
    workdir = Path(tempfile.mkdtemp(prefix="browser-test-"))
    settings = stack.model_copy(update={"viewer": stack.viewer.model_copy(update={"port": _free_port()})})
    worker_pid, worker_log = workdir / "worker.pid", workdir / "worker.log"
    root = str(Path(__file__).resolve().parents[3])
    process.spawn([sys.executable, "-m", "slidestream.compute_worker", "worker", "--loglevel", "warning"],
                  log_path=worker_log, pid_path=worker_pid, cwd=workdir,
                  env={"SLIDESTREAM_APP_ID": f"browser-{uuid.uuid4().hex[:6]}", "PYTHONPATH": root,
                       "SLIDESTREAM_COMPUTE__MODEL": "default" if SCREENSHOT_PATH else "bicubic"})
    try:
        start_viewer(settings, wait_s=90)
        yield ViewerTarget(url=viewer_url(settings).rstrip("/"), username=user, password=seeded.passwords[user],
                           exam_id=seeded.exam_id)
    finally:
        stop_viewer(settings)
        process.stop(worker_pid, grace_s=20)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def viewer_url(viewer_target: ViewerTarget) -> str:
    return viewer_target.url


@pytest.fixture(scope="session")
def screenshot_path() -> Path | None:
    return Path(SCREENSHOT_PATH) if SCREENSHOT_PATH else None


@pytest.fixture(scope="module")
def chromium_browser(viewer_target: ViewerTarget) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    executable = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not executable or not os.access(executable, os.X_OK):
        pytest.fail(f"chromium not found at {CHROMIUM}: run infra/ensure-browser.sh (or set CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def viewer_page(chromium_browser: Any) -> Iterator[Any]:
    """A fresh page (own context: no shared storage) of 1600x1000 CSS pixels.

    (Not named `page`/`browser`: those are pytest-playwright's fixture names, should it get installed.)
    """
    context = chromium_browser.new_context(viewport=VIEWPORT, device_scale_factor=1, service_workers="block")
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()
