"""FerretDB v1 (MongoDB wire protocol on SQLite or PostgreSQL), embedded in our small Go program.

``mongo.backend`` picks the storage: SQLite files in the data dir, or the private PostgreSQL
cluster of ``infra.postgres_server`` (then the health probe signs in like every client)."""

from __future__ import annotations

from pathlib import Path

from infra.build import Echo, digest, is_current, mark_current, require_tool, run_logged
from infra.health import mongo_ready
from infra.postgres_server import PostgresServer
from infra.server import Server

SOURCE_DIR = Path(__file__).resolve().parent / "ferretdb"
BINARY_NAME = "slidestream-ferretdb"
# Both backends are built in (mongo.backend chooses at start); part of the build's cache key.
BACKENDS = "sqlite+postgresql"


class FerretDBServer(Server):
    name = "ferretdb"

    @property
    def host(self) -> str:
        return self.settings.mongo.host

    @property
    def port(self) -> int:
        return self.settings.mongo.port

    @property
    def binary(self) -> Path:
        return self.layout.bin_dir / BINARY_NAME

    def build(self, echo: Echo) -> None:
        sources = [SOURCE_DIR / "go.mod", SOURCE_DIR / "go.sum", *sorted(SOURCE_DIR.glob("*.go"))]
        key = digest([BACKENDS, *sources])
        if is_current(self.binary, key):
            return
        go = require_tool("go", "ferretdb", "install Go 1.24 or newer from https://go.dev/dl/")
        self.layout.bin_dir.mkdir(parents=True, exist_ok=True)
        run_logged([go, "build", "-o", str(self.binary), "."],
                   what="ferretdb (FerretDB v1 + SQLite and PostgreSQL)", log_path=self.layout.build_log("ferretdb"),
                   echo=echo, cwd=SOURCE_DIR)
        mark_current(self.binary, key)

    def argv(self) -> list[str]:
        argv = [str(self.binary), "-listen-addr", self.address, "-data-dir", str(self.data_dir)]
        if self.settings.mongo.backend == "postgresql":
            argv += ["-handler", "postgresql", "-postgresql-url", PostgresServer(self.settings, self.layout).url]
        return argv

    async def ready(self) -> bool:
        credentials = self.settings.mongo.credentials()
        return await mongo_ready(self.host, self.port, credentials=credentials)
