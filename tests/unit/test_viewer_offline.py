"""The viewer works offline: its pages load nothing from another host (no CDN), and it
publishes no Swagger page (FastAPI's would fetch its assets from a CDN)."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import Settings
from viewer.app import STATIC, create_app

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|import\s+[^;]*["']https?://|url\(\s*["']?https?://""")


def test_static_files_reference_no_other_host() -> None:
    files = [p for p in Path(STATIC).rglob("*") if p.suffix in {".html", ".js", ".css"}]
    assert files
    for path in files:
        assert not EXTERNAL.search(path.read_text()), f"{path.name} loads something from another host"


def test_no_swagger_page_and_the_schema_is_published() -> None:
    app = create_app(Settings())
    paths = {getattr(route, "path", "") for route in app.routes}
    assert "/api/openapi.json" in paths
    assert "/api/docs" not in paths and "/docs" not in paths
