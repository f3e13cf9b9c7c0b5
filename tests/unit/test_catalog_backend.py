"""The catalog's PostgreSQL backend option: per-install credentials, which servers run, how
FerretDB is started, and the equality indexes pushed down to PostgreSQL."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from catalog.indexes import EQUALITY_FIELDS, INDEXES
from core.settings import Settings
from infra.ferretdb_server import FerretDBServer
from infra.layout import Layout
from infra.postgres_server import HBA, PostgresServer, push_down_sql
from infra.stack import catalog_server_names, make_servers


def _settings(tmp_path: Path, **mongo: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", build_cache=tmp_path / "cache", mongo=mongo)


def test_sqlite_needs_no_credentials_and_runs_no_postgres(tmp_path: Path) -> None:
    settings = _settings(tmp_path, backend="sqlite")
    assert settings.mongo.credentials() is None
    assert catalog_server_names(settings) == ["ferretdb"]
    assert "postgres" not in [s.name for s in make_servers(settings)]
    assert "-handler" not in FerretDBServer(settings, Layout.from_settings(settings)).argv()


def test_postgresql_password_is_the_installs_own_and_private(tmp_path: Path) -> None:
    a = _settings(tmp_path / "a", backend="postgresql")
    b = _settings(tmp_path / "b", backend="postgresql")
    user, first = a.mongo.credentials() or ("", SecretStr(""))
    assert user == "slidestream" and len(first.get_secret_value()) >= 32
    assert a.mongo.credentials() == (user, first)  # stable for one install
    assert b.mongo.credentials() != (user, first)  # no default shared between installs
    key = tmp_path / "a" / "state" / "secrets" / "catalog-db.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    configured = _settings(tmp_path / "c", backend="postgresql", password="p" * 20)
    assert configured.mongo.credentials() == ("slidestream", SecretStr("p" * 20))
    # A full URL carries its own credentials (production MongoDB).
    assert _settings(tmp_path / "d", backend="postgresql", url="mongodb://db:27017/").mongo.credentials() is None


def test_postgresql_backend_runs_postgres_under_ferretdb(tmp_path: Path) -> None:
    settings = _settings(tmp_path, backend="postgresql", postgres_port=28118)
    assert catalog_server_names(settings) == ["postgres", "ferretdb"]
    names = [s.name for s in make_servers(settings)]
    assert names.index("postgres") < names.index("ferretdb")
    layout = Layout.from_settings(settings)
    argv = FerretDBServer(settings, layout).argv()
    assert argv[argv.index("-handler") + 1] == "postgresql"
    url = argv[argv.index("-postgresql-url") + 1]
    assert url == "postgres://127.0.0.1:28118/postgres" and "@" not in url  # clients bring their own
    pg = PostgresServer(settings, layout).argv()
    assert "listen_addresses=127.0.0.1" in pg and "port=28118" in pg and "plan_cache_mode=force_custom_plan" in pg
    assert all(line.split()[-1] == "scram-sha-256" for line in HBA.splitlines() if line and not line.startswith("#"))


def test_postgres_port_must_differ_from_the_others(tmp_path: Path) -> None:
    # Both ports given: in `make test` the session's stack exports its own SLIDESTREAM_MONGO__*
    # ports, which would otherwise fill in the one left out.
    with pytest.raises(ValidationError, match="distinct"):
        _settings(tmp_path, port=27117, postgres_port=27117)


def test_push_down_sql_indexes_each_equality_field_of_existing_tables() -> None:
    tables = {"images": "images_d1d746ab", "exams": "exams_8363fdb3"}
    sql = push_down_sql("slidestream", tables, EQUALITY_FIELDS)
    assert len(sql) == len(EQUALITY_FIELDS["images"]) + len(EQUALITY_FIELDS["exams"])
    assert ('CREATE INDEX IF NOT EXISTS "images_d1d746ab_patient_id_eq_gin" ON "slidestream"."images_d1d746ab" '
            "USING gin ((_jsonb -> 'patient_id') jsonb_path_ops) WITH (fastupdate = off)") in sql
    assert all("jsonb_path_ops" in statement for statement in sql)
    quoted = push_down_sql("o'k", {"images": 'ta"ble'}, {"images": ("it's",)})
    assert quoted == ['CREATE INDEX IF NOT EXISTS "ta""ble_it_s_eq_gin" ON "o\'k"."ta""ble" '
                      "USING gin ((_jsonb -> 'it''s') jsonb_path_ops) WITH (fastupdate = off)"]


def test_every_equality_field_leads_a_declared_index_or_is_the_id() -> None:
    leading = {(spec.collection, spec.keys[0][0]) for spec in INDEXES}
    for collection, fields in EQUALITY_FIELDS.items():
        for name in fields:
            assert name == "_id" or (collection, name) in leading, (collection, name)
