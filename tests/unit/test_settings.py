"""Settings come from SLIDESTREAM_* variables and .env; typos and bad values fail loudly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No SLIDESTREAM_* variables from the caller, and a working directory without .env."""
    for name in list(os.environ):
        if name.upper().startswith("SLIDESTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def _error() -> str:
    with pytest.raises(ValidationError) as info:
        Settings()
    return str(info.value)


def test_defaults_are_the_local_stack() -> None:
    settings = Settings()
    assert settings.kafka.bootstrap == "127.0.0.1:19092"
    assert settings.storage.endpoint == "127.0.0.1:19000"
    assert settings.mongo.uri == "mongodb://127.0.0.1:27117/"


def test_prefixed_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIDESTREAM_LOG_LEVEL", "debug")
    monkeypatch.setenv("SLIDESTREAM_APP_ID", "hospital-a")
    settings = Settings()
    assert settings.log_level == "debug" and settings.app_id == "hospital-a"


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "error")
    assert Settings().log_level == "info"


def test_nested_groups_use_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIDESTREAM_KAFKA__PORT", "29092")
    monkeypatch.setenv("SLIDESTREAM_STORAGE__MID__BUCKET", "pathology-mid")
    monkeypatch.setenv("SLIDESTREAM_STORAGE__MID__ENDPOINT", "nas-2.hospital:9000")
    settings = Settings()
    assert settings.kafka.bootstrap == "127.0.0.1:29092"
    assert settings.storage.tiers()["mid"].bucket == "pathology-mid"
    assert settings.storage.tiers()["mid"].endpoint == "nas-2.hospital:9000"
    assert settings.storage.tiers()["long"].bucket == "slidestream-long"


def test_dotenv_file_is_read_and_environment_wins(clean_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_environment / ".env").write_text(
        "SLIDESTREAM_MONGO__PORT=27999\nSLIDESTREAM_LOG_FORMAT=console\nSLIDESTREAM_LOG_LEVEL=error\n"
        "OTHER_APPLICATION_TOKEN=unrelated\n"
    )
    monkeypatch.setenv("SLIDESTREAM_LOG_LEVEL", "warning")
    settings = Settings()
    assert settings.mongo.port == 27999
    assert settings.log_format == "console"
    assert settings.log_level == "warning"


@pytest.mark.parametrize(
    ("variable", "named"),
    [("SLIDESTREAM_LOG_LEVL", "log_levl"), ("SLIDESTREAM_KAFKA__PROT", "kafka.prot"),
     ("SLIDESTREAM_STORAGE__RECENT__BUCKIT", "storage.recent.buckit")],
)
def test_unknown_variables_are_rejected_by_name(monkeypatch: pytest.MonkeyPatch, variable: str, named: str) -> None:
    monkeypatch.setenv(variable, "1")
    message = _error()
    assert named in message and "Extra inputs are not permitted" in message


def test_unknown_dotenv_keys_are_rejected_by_name(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text("SLIDESTREAM_MONGO__DATABSE=x\n")
    assert "mongo.databse" in _error()


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http"])
def test_invalid_ports_are_rejected(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("SLIDESTREAM_STORAGE__PORT", port)
    assert "storage.port" in _error()


def test_ports_must_be_distinct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIDESTREAM_MONGO__PORT", "19092")
    assert "distinct" in _error()


def test_invalid_values_are_named_without_echoing_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIDESTREAM_STORAGE__SECRET_KEY", "tiny")
    monkeypatch.setenv("SLIDESTREAM_LOG_LEVEL", "verbose")
    message = _error()
    assert "storage.secret_key" in message and "log_level" in message
    assert "tiny" not in message


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.log_level = "debug"  # type: ignore[misc]  # deliberately writing frozen settings


def test_a_relative_state_dir_is_anchored_at_the_project_not_the_shell(monkeypatch, tmp_path) -> None:
    """`status`, `logs` and `down` run from another directory must see the same stack."""
    from core.settings import PROJECT_ROOT

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLIDESTREAM_STATE_DIR", raising=False)
    assert Settings(_env_file=None).state_dir == PROJECT_ROOT / "var"
    monkeypatch.setenv("SLIDESTREAM_STATE_DIR", "elsewhere/state")
    assert Settings(_env_file=None).state_dir == PROJECT_ROOT / "elsewhere" / "state"
    monkeypatch.setenv("SLIDESTREAM_STATE_DIR", str(tmp_path / "abs"))
    assert Settings(_env_file=None).state_dir == tmp_path / "abs"


def test_the_lab_colour_standard_lives_under_the_state_dir_unless_set(monkeypatch, tmp_path) -> None:
    from core.settings import PROJECT_ROOT

    monkeypatch.setenv("SLIDESTREAM_STATE_DIR", str(tmp_path / "state"))
    assert Settings().qc.lab_colour_standard == tmp_path / "state" / "qc" / "lab-colour-standard.json"
    assert Settings().qc.learn_colour_standard
    monkeypatch.setenv("SLIDESTREAM_QC__LAB_COLOUR_STANDARD", "lab/colour.json")
    monkeypatch.setenv("SLIDESTREAM_QC__LEARN_COLOUR_STANDARD", "false")
    settings = Settings()
    assert settings.qc.lab_colour_standard == PROJECT_ROOT / "lab" / "colour.json"  # anchored like state_dir
    assert not settings.qc.learn_colour_standard
