"""Run the viewer (uvicorn) until interrupted."""

from __future__ import annotations

import uvicorn

from core.settings import Settings
from viewer.app import create_app


async def serve(settings: Settings) -> None:
    viewer = settings.viewer
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=viewer.host, port=viewer.port,
                                           log_level="warning", access_log=False, proxy_headers=False))
    print(f"viewer on http://{viewer.host}:{viewer.port}/ (API docs /api/docs)", flush=True)
    await server.serve()
