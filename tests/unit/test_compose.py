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


# ${VAR:?message}: a variable compose requires (no default).
_REQUIRED_VAR = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}")

def test_kafka_authenticates_every_listener_with_required_passwords(compose: dict) -> None:
    """SASL on every listener, ACLs deny by default, and each principal's password comes from
    a required variable; the SCRAM users are written when the volume is formatted (KIP-900)."""
    services = compose["services"]
    env = {key: str(value) for key, value in services["kafka"]["environment"].items()}
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    names = [listener.split("://")[0] for listener in env["KAFKA_LISTENERS"].split(",")]
    assert names and all(protocols[name] == "SASL_PLAINTEXT" for name in names), protocols
    assert env["KAFKA_ADVERTISED_LISTENERS"].startswith("SASL_PLAINTEXT://")
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    defaults = Settings(_env_file=None).kafka
    assert env["KAFKA_SUPER_USERS"] == f"User:{defaults.admin_username}"
    for key in (k for k in env if k.endswith("_JAAS_CONFIG")):
        passwords = re.findall(r'password="([^"]*)"', env[key])
        assert passwords and all(_REQUIRED_VAR.fullmatch(p) for p in passwords), key

    fmt = services["kafka-format"]
    assert services["kafka"]["depends_on"]["kafka-format"]["condition"] == "service_completed_successfully"
    users = re.findall(r"--add-scram \"SCRAM-SHA-512=\[name=([^,]+),", fmt["command"][0])
    assert sorted(users) == sorted([defaults.admin_username, defaults.username, defaults.his_username,
                                    defaults.scanner_username])
    assert all(_REQUIRED_VAR.fullmatch(str(v)) for k, v in fmt["environment"].items() if "PASSWORD" in k)
    for name, service in services.items():
        if "build" in service:
            assert _REQUIRED_VAR.fullmatch(str(service["environment"]["SLIDESTREAM_KAFKA__PASSWORD"])), name
    assert _REQUIRED_VAR.fullmatch(str(services["bootstrap"]["environment"]["SLIDESTREAM_KAFKA__ADMIN_PASSWORD"]))


# Environment names that carry credentials: each must come from a required variable.
_CREDENTIAL = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|TOKEN|CREDENTIAL")
_REQUIRED = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):\?[^}]+\}")


def _environments(compose: dict) -> dict[str, dict[str, str]]:
    return {name: {k: str(v) for k, v in service.get("environment", {}).items()}
            for name, service in compose["services"].items()}


def test_no_credential_has_a_default_value(compose: dict) -> None:
    """Every credential comes from a required variable (``${VAR:?message}``): no fallback pair
    that every deployment would share, and compose refuses to start when one is missing."""
    checked = 0
    for service, env in _environments(compose).items():
        for key, value in env.items():
            if _CREDENTIAL.search(key):
                assert _REQUIRED.fullmatch(value), f"{service}: {key} must be ${{VAR:?message}}, is {value!r}"
                checked += 1
    assert checked >= 4  # MinIO's root pair, the services' storage pair, the viewer's token key
    raw = (ROOT / "docker-compose.yml").read_text()
    for fallback in re.findall(r"\$\{([A-Z_][A-Z0-9_]*):?-[^}]*\}", raw):
        assert not _CREDENTIAL.search(fallback), f"${{{fallback}}} has a default value"


def test_minio_and_the_services_share_one_required_key_pair(compose: dict) -> None:
    envs = _environments(compose)
    minio = envs["minio"]
    root = (_REQUIRED.fullmatch(minio["MINIO_ROOT_USER"]), _REQUIRED.fullmatch(minio["MINIO_ROOT_PASSWORD"]))
    assert root[0] and root[1]
    for name, env in envs.items():
        if "build" not in compose["services"][name]:
            continue
        access = _REQUIRED.fullmatch(env["SLIDESTREAM_STORAGE__ACCESS_KEY"])
        secret = _REQUIRED.fullmatch(env["SLIDESTREAM_STORAGE__SECRET_KEY"])
        assert access and secret, name
        assert (access.group(1), secret.group(1)) == (root[0].group(1), root[1].group(1)), name
