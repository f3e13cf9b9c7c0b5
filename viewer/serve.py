"""Run the viewer (uvicorn): in the foreground (``slidestream viewer``), or inside a running
event loop on a free port (tests, bench)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from core.settings import Settings
from viewer.app import create_app
from viewer.context import ViewerContext, open_viewer


async def serve(settings: Settings) -> None:
    viewer = settings.viewer
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=viewer.host, port=viewer.port,
                                           log_level="warning", access_log=False, log_config=None, proxy_headers=False))
    print(f"viewer on http://{viewer.host}:{viewer.port}/ (OpenAPI schema /api/openapi.json)", flush=True)
    await server.serve()


@contextlib.asynccontextmanager
async def serving(settings: Settings, context: ViewerContext) -> AsyncIterator[str]:
    """The app on a free loopback port of this event loop; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings, context), host="127.0.0.1", port=0,
                                           log_level="warning", access_log=False, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def running_viewer(settings: Settings, *, compute: bool = True) -> AsyncIterator[tuple[ViewerContext, str]]:
    async with open_viewer(settings, compute=compute) as context, serving(settings, context) as url:
        yield context, url
