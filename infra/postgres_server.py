"""A private PostgreSQL cluster under the state dir, for FerretDB's PostgreSQL backend.

``initdb`` makes the cluster in ``<state_dir>/postgres`` on the first start: its one role is
``mongo.user`` with the install's own password (``MongoSettings.credentials``: made once under
``<state_dir>/secrets``, no shared default), and ``pg_hba.conf`` accepts only that password
(scram-sha-256) over loopback TCP and the cluster's own unix socket directory. FerretDB passes
every catalog client's user and password through to it, so the catalog needs credentials.

PostgreSQL refuses to run as root: as root, initdb and the server run as the ``postgres``
system user that Debian's packages create.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from core.settings import MongoSettings
from infra.build import Echo
from infra.errors import InfraError
from infra.health import tcp_open
from infra.server import Server

DEBIAN_BIN = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"
DATABASE = "postgres"  # FerretDB keeps each MongoDB database as a schema in it
HBA = """# slidestream: password (scram-sha-256) only; loopback and this cluster's socket directory
local   all   all                 scram-sha-256
host    all   all   127.0.0.1/32  scram-sha-256
host    all   all   ::1/128       scram-sha-256
"""


def find_program(name: str) -> Path | None:
    """``name`` from PATH, else from Debian's newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return Path(found)
    versions = sorted(DEBIAN_BIN.glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for bin_dir in reversed(versions):
        if (bin_dir / name).is_file():
            return bin_dir / name
    return None


class PostgresServer(Server):
    name = "postgres"
    stop_grace_s = 30.0

    @property
    def host(self) -> str:
        return self.settings.mongo.host

    @property
    def port(self) -> int:
        return self.settings.mongo.postgres_port

    @property
    def url(self) -> str:
        """What FerretDB connects to (no credentials: each client brings its own)."""
        return f"postgres://{self.host}:{self.port}/{DATABASE}"

    def _program(self, name: str) -> Path:
        found = find_program(name)
        if found is None:
            raise InfraError(f"postgres: {name} not found; install PostgreSQL 15 or newer "
                             "(infra/ensure-tools.sh installs Debian's postgresql-15)")
        return found

    def run_as(self) -> str | None:
        """PostgreSQL refuses to run as root: as root, it runs as the ``postgres`` system user."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise InfraError(f"postgres: running as root needs the '{SYSTEM_USER}' system user "
                             "(Debian's postgresql package creates it)") from None
        return SYSTEM_USER

    def build(self, echo: Echo) -> None:
        for name in ("initdb", "postgres"):
            self._program(name)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SYSTEM_USER)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def prepare(self, echo: Echo) -> None:
        data = self.data_dir
        if (data / "PG_VERSION").exists():
            return
        credentials = self.settings.mongo.credentials()
        if credentials is None:  # pragma: no cover - the stack runs us only on this backend
            raise InfraError("postgres: the catalog backend is not postgresql")
        user, password = credentials
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(data)
        echo(f"postgres: creating the cluster in {data}")
        pwfile = data.parent / f".{self.name}-initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password.get_secret_value() + "\n")
        self._chown(pwfile)
        try:
            owner = self.run_as()
            result = subprocess.run(
                [str(self._program("initdb")), "-D", str(data), "-U", user,
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                capture_output=True, text=True, check=False,
                user=owner, group=owner, extra_groups=[] if owner else None)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)  # a half-made cluster would block the next try
            raise InfraError(f"postgres: initdb failed ({result.returncode}): {result.stderr.strip()[-800:]}")
        (data / "pg_hba.conf").write_text(HBA)
        self._chown(data / "pg_hba.conf")

    def argv(self) -> list[str]:
        return [str(self._program("postgres")), "-D", str(self.data_dir),
                "-c", f"listen_addresses={self.host}", "-c", f"port={self.port}",
                "-c", f"unix_socket_directories={self.data_dir}",
                "-c", "password_encryption=scram-sha-256",
                # FerretDB names the filtered field as a statement parameter (``_jsonb -> $1``):
                # only a plan made with the parameter values can use an expression index.
                "-c", "plan_cache_mode=force_custom_plan"]

    async def ready(self) -> bool:
        if not await tcp_open(self.host, self.port):
            return False
        isready = find_program("pg_isready")
        if isready is None:
            return True
        probe = [str(isready), "-q", "-h", self.host, "-p", str(self.port), "-d", DATABASE, "-t", "2"]
        code = await asyncio.to_thread(lambda: subprocess.run(probe, check=False, capture_output=True).returncode)
        return code == 0


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def push_down_sql(schema: str, tables: dict[str, str], fields: dict[str, tuple[str, ...]]) -> list[str]:
    """``CREATE INDEX IF NOT EXISTS`` statements: a GIN index (jsonb_path_ops) on
    ``(_jsonb -> 'field')`` of each collection's table, the expression FerretDB v1 filters
    equality with (``@>``, which a btree cannot serve). Without fastupdate: entries go straight
    into the index instead of a pending list that every lookup scans until the next vacuum."""
    statements = []
    for collection, names in sorted(fields.items()):
        table = tables.get(collection)
        if table is None:
            continue
        for field_name in names:
            tag = "".join(c if c.isalnum() else "_" for c in field_name).strip("_")[:24] or "f"
            index = f"{table}_{tag}_eq_gin"
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {_ident(index)} ON {_ident(schema)}.{_ident(table)} "
                f"USING gin ((_jsonb -> {_literal(field_name)}) jsonb_path_ops) WITH (fastupdate = off)")
    return statements


def push_down_indexes(mongo: MongoSettings, fields: dict[str, tuple[str, ...]]) -> list[str]:
    """Create the equality indexes of ``fields`` on the tables FerretDB made for the catalog
    database's collections (collections that do not exist yet are skipped); returns the
    statements run (each is a no-op when its index exists)."""
    credentials = mongo.credentials()
    if credentials is None:
        raise InfraError("postgres: the catalog backend is not postgresql")
    user, password = credentials
    psql = find_program("psql")
    if psql is None:
        raise InfraError("postgres: psql not found (Debian: postgresql-client-15)")
    env = {**os.environ, "PGPASSWORD": password.get_secret_value(), "PGCONNECT_TIMEOUT": "10"}
    base = [str(psql), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", mongo.host, "-p", str(mongo.postgres_port),
            "-U", user, "-d", DATABASE]

    def query(sql: str) -> str:
        done = subprocess.run([*base, "-F", "\t", "-c", sql], env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise InfraError(f"postgres: {done.stderr.strip()[-500:]}")
        return done.stdout

    metadata = f"{_ident(mongo.database)}._ferretdb_database_metadata"
    if query(f"SELECT to_regclass({_literal(metadata)}) IS NOT NULL").strip() != "t":
        return []
    listed = query(f"SELECT _jsonb->>'_id', _jsonb->>'table' FROM {metadata}")
    tables = dict(line.split("\t", 1) for line in listed.splitlines() if "\t" in line)
    statements = push_down_sql(mongo.database, tables, fields)
    if statements:
        done = subprocess.run([*base, "-f", "-"], input=";\n".join(statements) + ";\n", env=env,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise InfraError(f"postgres: creating the equality indexes failed: {done.stderr.strip()[-500:]}")
    return statements
