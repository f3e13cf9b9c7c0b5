"""Storage credentials: no shared default pair. Unconfigured, each install makes its own
(random, in a 0600 file under its state dir); a configured pair always wins."""

from __future__ import annotations

import os
import stat

import pytest
from pydantic import SecretStr

from core.secrets import STORAGE_KEY_FILE
from core.settings import Settings, StorageSettings, TierEndpoint
from infra.bootstrap import tier_connection
from infra.layout import Layout
from infra.minio_server import MinioServer

# The pair every install shared before: it must never be what an unconfigured install uses.
OLD_DEFAULT = ("slidestream", "slidestream-dev-secret")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SLIDESTREAM_"):
            monkeypatch.delenv(key)


def _settings(tmp_path, name: str) -> Settings:
    return Settings(_env_file=None, state_dir=tmp_path / name)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_each_install_makes_its_own_private_random_pair(tmp_path, clean_env) -> None:
    first = _settings(tmp_path, "a").storage.credentials()
    second = _settings(tmp_path, "b").storage.credentials()
    assert first[0] != second[0] and first[1].get_secret_value() != second[1].get_secret_value()
    for pair in (first, second):
        assert (pair[0], pair[1].get_secret_value()) != OLD_DEFAULT
        assert len(pair[0]) == 20 and len(pair[1].get_secret_value()) == 40
    key_file = tmp_path / "a" / "secrets" / STORAGE_KEY_FILE
    assert _mode(key_file) == 0o600 and _mode(key_file.parent) == 0o700
    assert not [p for p in key_file.parent.iterdir() if p.name != STORAGE_KEY_FILE]  # no temporary left


def test_the_pair_is_stable_for_one_install(tmp_path, clean_env) -> None:
    """Every process of one install (MinIO, bootstrap, agents, CLI) resolves the same pair."""
    first = _settings(tmp_path, "a").storage.credentials()
    again = _settings(tmp_path, "a").storage.credentials()
    assert (first[0], first[1].get_secret_value()) == (again[0], again[1].get_secret_value())


def test_the_local_minio_and_its_clients_use_the_same_pair(tmp_path, clean_env) -> None:
    settings = _settings(tmp_path, "a")
    env = MinioServer(settings, Layout.from_settings(settings)).env()
    access, secret = settings.storage.credentials()
    assert (env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]) == (access, secret.get_secret_value())
    for tier in settings.storage.tiers().values():
        conn = tier_connection(settings.storage, tier)
        assert (conn.access_key, conn.secret_key) == (access, secret.get_secret_value())


def test_a_configured_pair_wins_and_makes_no_file(tmp_path, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("SLIDESTREAM_STORAGE__ACCESS_KEY", "hospital-s3")
    monkeypatch.setenv("SLIDESTREAM_STORAGE__SECRET_KEY", "from-the-vault-123")
    settings = _settings(tmp_path, "a")
    access, secret = settings.storage.credentials()
    assert (access, secret.get_secret_value()) == ("hospital-s3", "from-the-vault-123")
    assert MinioServer(settings, Layout.from_settings(settings)).env()["MINIO_ROOT_PASSWORD"] == "from-the-vault-123"
    assert not (tmp_path / "a" / "secrets").exists()
    assert "from-the-vault" not in repr(settings.storage)


def test_a_tier_on_its_own_endpoint_keeps_its_own_pair(tmp_path, clean_env) -> None:
    settings = _settings(tmp_path, "a")
    long = TierEndpoint(bucket="archive", endpoint="s3.example.org", access_key="arch",
                        secret_key=SecretStr("arch-secret"))
    storage = settings.storage.model_copy(update={"long": long})
    assert storage.credentials(long)[0] == "arch"
    assert storage.credentials(storage.mid) == settings.storage.credentials()  # model_copy keeps the install's


def test_without_a_state_dir_unconfigured_credentials_are_an_error() -> None:
    with pytest.raises(ValueError, match="not configured"):
        StorageSettings().credentials()
