"""The Faust app keeps its data directory under the state directory, never in the working
directory (processes and tests started anywhere left ``<app id>-data`` folders behind)."""

from __future__ import annotations

from pathlib import Path

from agents.app import create_app
from core.settings import Settings


def test_faust_data_lives_under_the_state_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(state_dir=tmp_path / "state", app_id="unit-app")
    app = create_app(settings, agent_modules=())
    assert Path(app.conf.appdir).is_relative_to(tmp_path / "state")
    assert "unit-app" in str(app.conf.appdir)
    Path(app.conf.datadir).mkdir(exist_ok=True)  # what Faust does at start: its parent must exist
    assert not any(p.name.endswith("-data") for p in tmp_path.iterdir())
