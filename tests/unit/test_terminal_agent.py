"""``slidestream terminal run``: the key file must be the user's own and private; options
resolve like the settings say."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from core.settings import Settings
from slidestream.cli import main
from terminal.runner import KeyFileError, options, read_key_file


def key_file(tmp_path: Path, mode: int, text: str = "secret-key\n") -> Path:
    path = tmp_path / "terminal.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_private_key_file_is_read(tmp_path: Path) -> None:
    assert read_key_file(key_file(tmp_path, 0o600)) == "secret-key"
    assert read_key_file(key_file(tmp_path, 0o400)) == "secret-key"


@pytest.mark.parametrize(("mode", "text", "message"), [
    (0o644, "k", "mode 0644: others can read"),
    (0o640, "k", "chmod 600"),
    (0o600, "  \n", "is empty"),
])
def test_unsafe_or_empty_key_files_are_refused(tmp_path: Path, mode: int, text: str, message: str) -> None:
    with pytest.raises(KeyFileError, match=message):
        read_key_file(key_file(tmp_path, mode, text))


def test_a_key_file_owned_by_someone_else_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = key_file(tmp_path, 0o600)
    monkeypatch.setattr(os, "getuid", lambda: path.stat().st_uid + 1)
    with pytest.raises(KeyFileError, match="not to you"):
        read_key_file(path)


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read the key file"):
        read_key_file(tmp_path / "absent.key")


def test_the_command_refuses_a_readable_key_file(tmp_path: Path, capture: io.StringIO,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = key_file(tmp_path, 0o644)
    assert main(["terminal", "run", "--id", "T1", "--key-file", str(path), "--once"]) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_options_put_a_relative_cache_under_the_state_dir(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    opts = options(settings, "T1", tmp_path / "k")
    assert opts.cache_dir == tmp_path / "state" / "terminal-cache"
    assert (opts.server_url, opts.port) == (settings.terminal.server_url, settings.terminal.port)
    custom = options(settings, "T1", tmp_path / "k", server="http://viewer:1", cache_dir=tmp_path / "c", port=9)
    assert (custom.server_url, custom.cache_dir, custom.port) == ("http://viewer:1", tmp_path / "c", 9)
