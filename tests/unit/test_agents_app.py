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


def test_a_killed_worker_is_given_up_on_after_the_configured_session_timeout(tmp_path: Path) -> None:
    """After `kill -9`, the group waits this long before the new worker gets the partitions
    (Faust's own default, 60 s, made `slidestream up` block ~56 s; 10 s gave 8-19 s)."""
    app = create_app(Settings(state_dir=tmp_path / "state", app_id="unit-app"), agent_modules=())
    assert app.conf.broker_session_timeout == 10.0
    assert app.conf.broker_heartbeat_interval * 3 <= app.conf.broker_session_timeout
    slow = create_app(Settings(state_dir=tmp_path / "s2", app_id="unit-app", kafka={"session_timeout_s": 30}),
                      agent_modules=())
    assert slow.conf.broker_session_timeout == 30.0
