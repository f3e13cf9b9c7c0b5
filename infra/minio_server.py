"""MinIO (S3 API), built from its Go module with `go install`."""

from __future__ import annotations

from pathlib import Path

from infra.build import Echo, digest, is_current, mark_current, require_tool, run_logged
from infra.health import minio_ready
from infra.server import Server

MODULE = "github.com/minio/minio"
# The last MinIO community release, RELEASE.2025-10-15T17-29-55Z, is commit 9e49d5e7a648, but
# the Go module proxy answers 403 "not available" for its pseudo-version
# v0.0.0-20251015172955-9e49d5e7a648. We pin the newest commit the proxy does serve: the
# repository's final commit (2026-02-12), after which the community edition is unmaintained.
# slidestream uses only the plain S3 API, so any S3 store can replace MinIO.
VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"


class MinioServer(Server):
    name = "minio"

    @property
    def host(self) -> str:
        return self.settings.storage.host

    @property
    def port(self) -> int:
        return self.settings.storage.port

    def bound_ports(self) -> tuple[int, ...]:
        return (self.settings.storage.port, self.settings.storage.console_port)

    @property
    def binary(self) -> Path:
        return self.layout.bin_dir / "minio"

    def build(self, echo: Echo) -> None:
        key = digest([MODULE, VERSION])
        if is_current(self.binary, key):
            return
        go = require_tool("go", "minio", "install Go 1.24 or newer from https://go.dev/dl/")
        self.layout.bin_dir.mkdir(parents=True, exist_ok=True)
        run_logged([go, "install", f"{MODULE}@{VERSION}"], what=f"minio {VERSION}",
                   log_path=self.layout.build_log("minio"), echo=echo,
                   env={"GOBIN": str(self.layout.bin_dir)})
        mark_current(self.binary, key)

    def argv(self) -> list[str]:
        storage = self.settings.storage
        return [str(self.binary), "server",
                "--address", f"{storage.host}:{storage.port}",
                "--console-address", f"{storage.host}:{storage.console_port}",
                str(self.data_dir)]

    def env(self) -> dict[str, str]:
        storage = self.settings.storage
        # The configured pair, else the install's own (core.settings.StorageSettings.credentials):
        # never a built-in one that every install would share.
        access, secret = storage.credentials()
        return {
            "MINIO_ROOT_USER": access,
            "MINIO_ROOT_PASSWORD": secret.get_secret_value(),
            "MINIO_SITE_REGION": storage.region,
            "MINIO_BROWSER": "off",  # no web console: the S3 API is all slidestream needs
            "MINIO_UPDATE": "off",
        }

    async def ready(self) -> bool:
        return await minio_ready(self.host, self.port, self.settings.storage.secure)
