"""docker-compose.yml cannot be run here (no Docker engine), so check it structurally."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ("kafka", "mongo", "minio")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with no VAR set; ${VAR:?message} (required) with a test value."""
    value = re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "t" * 40, value)
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_servers_use_official_images_with_health_checks_and_volumes(compose: dict) -> None:
    services = compose["services"]
    images = {name: services[name]["image"] for name in SERVERS}
    assert images["kafka"].startswith("apache/kafka:4.")
    assert images["mongo"].startswith("mongo:")
    assert images["minio"].startswith("minio/minio:")
    for name in SERVERS:
        assert services[name]["healthcheck"]["test"], name
        for volume in services[name].get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], f"{name} uses undeclared volume {volume}"


def test_kafka_is_single_node_kraft(compose: dict) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    for key, value in env.items():
        if key.endswith("REPLICATION_FACTOR") or key.endswith("MIN_ISR"):
            assert value == "1", key


def test_dependencies_exist_and_wait_for_health(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec["condition"] in {"service_healthy", "service_completed_successfully"}


def test_slidestream_services_configuration_is_accepted_by_settings(compose: dict, monkeypatch) -> None:
    """The environment each slidestream service gets must pass our strict Settings."""
    services = compose["services"]
    checked = 0
    for service in services.values():
        if "build" not in service:
            continue
        for key in list(os.environ):
            if key.startswith("SLIDESTREAM_"):
                monkeypatch.delenv(key)
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, _interpolate(str(value)))
        settings = Settings(_env_file=None)
        assert settings.kafka.bootstrap == "kafka:9092"
        assert settings.mongo.uri.startswith("mongodb://mongo:")
        assert settings.storage.endpoint == "minio:9000"
        checked += 1
    assert checked >= 2


def test_settings_reject_a_misspelt_variable_like_compose_would_pass(monkeypatch) -> None:
    monkeypatch.setenv("SLIDESTREAM_KAFKA__PROT", "9092")
    with pytest.raises(Exception, match="PROT|prot"):
        Settings(_env_file=None)


def test_the_viewer_needs_its_own_token_key(compose: dict) -> None:
    """No default signing key in deployment: compose refuses to start without one."""
    env = compose["services"]["viewer"]["environment"]
    assert re.fullmatch(r"\$\{VIEWER_TOKEN_SECRET:\?.+\}", env["SLIDESTREAM_VIEWER__TOKEN_SECRET"])
    assert compose["services"]["viewer"]["healthcheck"]["test"]
