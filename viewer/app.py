"""The viewer's FastAPI application: the API routes, the browser UI and OpenSeadragon (from
npm, served here: no CDN, works offline), a health check and the published OpenAPI schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from core.settings import Settings
from viewer import http_errors
from viewer.context import ViewerContext, open_viewer
from viewer.routes import admin, auth, exams, iiif, reports, slides, terminal

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
OPENSEADRAGON = HERE / "web" / "node_modules" / "openseadragon" / "build" / "openseadragon"


def create_app(settings: Settings, context: ViewerContext | None = None) -> FastAPI:
    """``context``: an already opened one (tests); otherwise the app opens its own."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if context is not None:
            app.state.viewer = context
            yield
            return
        async with open_viewer(settings) as opened:
            app.state.viewer = opened
            yield

    app = FastAPI(title="slidestream viewer", version="1", lifespan=lifespan,
                  description="Deep Zoom over 5x storage with 40x computed on demand; search, reports.",
                  # No Swagger page: FastAPI's loads its assets from a CDN, and the viewer works offline.
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    http_errors.install(app)
    for module in (auth, exams, slides, iiif, reports, admin, terminal):
        app.include_router(module.router)

    @app.get("/health", tags=["health"])
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC / "index.html")

    if OPENSEADRAGON.is_dir():
        app.mount("/vendor/openseadragon", StaticFiles(directory=OPENSEADRAGON), name="openseadragon")
    return app
