"""infra/ configuration, planning and caching, without servers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.kafka import kafka_credentials
from core.settings import KafkaSettings, Settings, StorageSettings, TierEndpoint
from infra.bootstrap import plan_topics, tier_connection
from infra.build import digest, is_current, mark_current
from infra.errors import InfraError, StackStartError, StartFailure
from infra.ferretdb_server import FerretDBServer
from infra.kafka_broker import (
    KafkaBroker,
    load_or_create_cluster_id,
    new_cluster_id,
    render_server_properties,
    write_private,
)
from infra.layout import Layout
from infra.minio_server import MinioServer
from infra.stack import ServerStatus, State, format_status, make_servers
from schemas.topics import TopicSpec


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", build_cache=tmp_path / "cache", **overrides)


def test_server_properties_follow_the_kafka_settings(tmp_path: Path) -> None:
    kafka = KafkaSettings(port=29092, controller_port=29093)
    props = _properties(render_server_properties(kafka, tmp_path / "data", admin_password="p" * 64))

    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.voters"] == f"{props['node.id']}@127.0.0.1:29093"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_server_properties_fit_a_single_broker(tmp_path: Path) -> None:
    props = _properties(render_server_properties(KafkaSettings(), tmp_path, admin_password="p" * 64))

    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert int(props["log.cleaner.dedupe.buffer.size"]) < 128 * 1024 * 1024
    assert props["auto.create.topics.enable"] == "false"


def test_server_properties_escape_backslashes_in_paths() -> None:
    props = _properties(render_server_properties(KafkaSettings(), Path("/data/with\\slash"), admin_password="p" * 64))
    assert props["log.dirs"] == "/data/with\\\\slash"


def test_every_listener_authenticates_and_acls_deny_by_default(tmp_path: Path) -> None:
    kafka = KafkaSettings(admin_username="broker-admin")
    props = _properties(render_server_properties(kafka, tmp_path, admin_password="s3cret" * 4))

    protocols = dict(pair.split(":") for pair in props["listener.security.protocol.map"].split(","))
    names = [listener.split("://")[0] for listener in props["listeners"].split(",")]
    assert all(protocols[name] == "SASL_PLAINTEXT" for name in names), protocols
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:broker-admin"
    assert 'username="broker-admin" password="s3cret' in props["listener.name.controller.plain.sasl.jaas.config"]


def test_kafka_passwords_are_per_install_and_the_config_is_private(tmp_path: Path) -> None:
    first, second = _settings(tmp_path / "a"), _settings(tmp_path / "b")
    user, password = kafka_credentials(first, "app")
    assert (user, password) == kafka_credentials(first, "app")  # stable within an install
    assert password != kafka_credentials(second, "app")[1]  # no password shared between installs
    others = {kafka_credentials(first, p)[1] for p in ("his", "scanner", "admin")}
    assert password not in others and len(others) == 3
    secret = first.state_dir / "secrets" / f"kafka-{user}.password"
    assert secret.stat().st_mode & 0o777 == 0o600
    configured = first.model_copy(update={"kafka": KafkaSettings(password=SecretStr("configured-password-1"))})
    assert kafka_credentials(configured, "app") == ("slidestream-app", "configured-password-1")

    broker = KafkaBroker(first, Layout.from_settings(first))
    broker.data_dir.mkdir(parents=True)
    write_private(broker.config_file, "x=1\n")
    assert broker.config_file.stat().st_mode & 0o777 == 0o600


def test_cluster_id_is_sixteen_bytes_in_url_safe_base64() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for value in ids:
        assert len(value) == 22 and not value.startswith("-")
        assert len(base64.urlsafe_b64decode(value + "==")) == 16


def test_cluster_id_is_created_once_per_data_dir(tmp_path: Path) -> None:
    first = load_or_create_cluster_id(tmp_path / "kafka" / "cluster.id")
    assert load_or_create_cluster_id(tmp_path / "kafka" / "cluster.id") == first
    assert load_or_create_cluster_id(tmp_path / "other" / "cluster.id") != first


def test_topic_plan_creates_missing_grows_smaller_and_flags_larger() -> None:
    specs = [TopicSpec("a", 4), TopicSpec("b", 6), TopicSpec("c", 2), TopicSpec("d", 3)]
    plan = plan_topics(specs, {"b": 2, "c": 5, "d": 3, "unrelated": 9})

    assert [spec.name for spec in plan.create] == ["a"]
    assert dict(plan.grow) == {"b": 6}
    assert dict(plan.oversized) == {"c": (5, 2)}


def test_topic_plan_is_empty_when_the_cluster_matches() -> None:
    specs = [TopicSpec("a", 4), TopicSpec("b", 1)]
    plan = plan_topics(specs, {"a": 4, "b": 1})
    assert not plan.create and not plan.grow and not plan.oversized


def test_tier_without_endpoint_uses_the_default_minio() -> None:
    storage = StorageSettings(port=29000, access_key="key", secret_key=SecretStr("secret-123"))
    conn = tier_connection(storage, storage.recent)

    assert (conn.endpoint, conn.access_key, conn.secret_key, conn.secure) == ("127.0.0.1:29000", "key", "secret-123", False)
    assert conn.bucket == storage.recent.bucket


def test_tier_with_its_own_endpoint_uses_its_own_credentials() -> None:
    storage = StorageSettings(
        long=TierEndpoint(bucket="archive", endpoint="s3.example.org", access_key="arch",
                          secret_key=SecretStr("arch-secret"), secure=True),
    )
    conn = tier_connection(storage, storage.long)

    assert (conn.endpoint, conn.access_key, conn.secret_key, conn.secure) == ("s3.example.org", "arch", "arch-secret", True)
    assert conn.bucket == "archive"


def test_tier_with_own_endpoint_but_no_keys_falls_back_to_default_keys() -> None:
    storage = StorageSettings(access_key="key", secret_key=SecretStr("secret-123"),
                              mirror=TierEndpoint(bucket="m", endpoint="other:9000"))
    conn = tier_connection(storage, storage.mirror)
    assert (conn.endpoint, conn.access_key) == ("other:9000", "key")


def test_minio_command_and_environment_come_from_settings(tmp_path: Path) -> None:
    settings = _settings(tmp_path, storage={"port": 29000, "console_port": 29001, "access_key": "admin",
                                            "secret_key": "very-secret"})
    minio = MinioServer(settings, Layout.from_settings(settings))

    argv = minio.argv()
    assert argv[argv.index("--address") + 1] == "127.0.0.1:29000"
    assert argv[argv.index("--console-address") + 1] == "127.0.0.1:29001"
    assert argv[-1] == str((tmp_path / "state" / "minio").resolve())
    env = minio.env()
    assert (env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]) == ("admin", "very-secret")
    assert minio.bound_ports() == (29000, 29001)


def test_ferretdb_command_listens_where_settings_say(tmp_path: Path) -> None:
    settings = _settings(tmp_path, mongo={"port": 27217})
    ferretdb = FerretDBServer(settings, Layout.from_settings(settings))

    argv = ferretdb.argv()
    assert argv[argv.index("-listen-addr") + 1] == "127.0.0.1:27217"
    assert Path(argv[argv.index("-data-dir") + 1]).is_absolute()


def test_kafka_runs_with_the_configured_heap_and_cached_class_path(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka={"heap_mb": 768})
    kafka = KafkaBroker(settings, Layout.from_settings(settings))

    argv = kafka.argv()
    assert "-Xmx768m" in argv
    assert argv[argv.index("-cp") + 1] == f"{(tmp_path / 'cache').resolve()}/kafka-{settings.kafka.version}/libs/*"
    assert argv[-2:] == ["kafka.Kafka", str(kafka.config_file)]


def test_layout_is_absolute_and_the_same_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import PROJECT_ROOT

    monkeypatch.chdir(tmp_path)
    layout = Layout.from_settings(Settings(state_dir=Path("var")))
    assert layout.pid_file("kafka") == PROJECT_ROOT.resolve() / "var" / "run" / "kafka.pid"
    assert layout.log_file("minio") == PROJECT_ROOT.resolve() / "var" / "logs" / "minio.log"


def test_stamp_marks_an_artefact_current_only_for_the_same_inputs(tmp_path: Path) -> None:
    source = tmp_path / "main.go"
    source.write_text("package main\n")
    artefact = tmp_path / "bin"
    artefact.write_bytes(b"\x7fELF")
    key = digest(["v1", source])

    assert not is_current(artefact, key)
    mark_current(artefact, key)
    assert is_current(artefact, key)
    source.write_text("package main // changed\n")
    assert not is_current(artefact, digest(["v1", source]))
    assert not is_current(artefact, digest(["v2", source]))
    artefact.unlink()
    assert not is_current(artefact, key)


def test_unknown_server_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="zookeeper"):
        make_servers(_settings(tmp_path), ["kafka", "zookeeper"])
    assert [s.name for s in make_servers(_settings(tmp_path), ["ferretdb", "kafka"])] == ["kafka", "ferretdb"]


def test_start_error_names_the_server_and_what_was_stopped() -> None:
    failure = StartFailure("minio", "exited with status 1", "/var/logs/minio.log", "FATAL port in use")
    error = StackStartError([failure], stopped=["ferretdb", "kafka"])

    assert error.servers == ("minio",)
    text = str(error)
    assert text.startswith("minio failed to start: exited with status 1")
    assert "FATAL port in use" in text and "ferretdb, kafka" in text


def test_status_table_lists_each_server() -> None:
    table = format_status([
        ServerStatus("kafka", "127.0.0.1:19092", State.HEALTHY, 4242, Path("var/logs/kafka.log")),
        ServerStatus("minio", "127.0.0.1:19000", State.STOPPED, None, Path("var/logs/minio.log")),
    ])
    lines = table.splitlines()
    assert lines[0].split() == ["server", "state", "pid", "address", "log"]
    assert lines[1].split() == ["kafka", "healthy", "4242", "127.0.0.1:19092", "var/logs/kafka.log"]
    assert lines[2].split() == ["minio", "stopped", "-", "127.0.0.1:19000", "var/logs/minio.log"]
