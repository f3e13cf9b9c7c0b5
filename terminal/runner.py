"""Putting the terminal agent together: the key file, the local cache, the server client,
the sync loop and (unless ``once``) the loopback server for the browser."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog
import uvicorn

from core.settings import Settings, TerminalSettings
from terminal.cache import LocalCache
from terminal.client import TerminalClient
from terminal.local_server import create_app
from terminal.progress import ProgressDisplay
from terminal.sync import Syncer, SyncError

log = structlog.get_logger(__name__)


class KeyFileError(Exception):
    """The terminal key file is missing, unsafe or empty."""


@dataclass(frozen=True)
class AgentOptions:
    terminal_id: str
    key_file: Path
    server_url: str
    cache_dir: Path
    host: str
    port: int


def read_key_file(path: Path) -> str:
    """The terminal key, only from a file this user owns and nobody else can read: whoever
    holds the key downloads every exam assigned to the terminal."""
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"the key file {path} is not a regular file")
    if info.st_uid != os.getuid():
        raise KeyFileError(f"the key file {path} belongs to user id {info.st_uid}, not to you ({os.getuid()}); "
                           "it must be yours and mode 0600")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyFileError(f"the key file {path} has mode {mode:04o}: others can read the terminal's key; "
                           f"run: chmod 600 {path}")
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise KeyFileError(f"the key file {path} is empty; write the key from "
                           "`slidestream terminal register --key-file` into it")
    return key


def options(settings: Settings, terminal_id: str, key_file: Path, *, server: str | None = None,
            cache_dir: Path | None = None, port: int | None = None) -> AgentOptions:
    t = settings.terminal
    root = cache_dir or t.cache_dir
    if not root.is_absolute():
        root = settings.state_dir / root
    return AgentOptions(terminal_id=terminal_id, key_file=key_file, server_url=server or t.server_url,
                        cache_dir=root, host=t.host, port=t.port if port is None else port)


def build(opts: AgentOptions, t: TerminalSettings, key: str) -> Syncer:
    # httpx logs every request at INFO: thousands of tile lines per exam would bury the useful ones.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cache = LocalCache(opts.cache_dir, max_bytes=t.max_cache_bytes, min_free_bytes=t.min_free_bytes,
                       retention_days=t.retention_days).open()
    client = TerminalClient(opts.server_url, opts.terminal_id, key)
    return Syncer(client, cache, heartbeat_s=t.heartbeat_s, poll_s=t.poll_s, concurrency=t.download_concurrency,
                  progress=ProgressDisplay())


async def run_once(syncer: Syncer, timeout_s: float | None = None) -> None:
    """Download until every assigned exam is complete locally; SyncError otherwise (also when
    ``timeout_s`` passes first)."""
    try:
        await syncer.run_until_complete(timeout_s=timeout_s)
    finally:
        await syncer.client.aclose()
        syncer.cache.close()


async def run_forever(syncer: Syncer, opts: AgentOptions) -> None:
    app = create_app(syncer, server_url=opts.server_url, terminal_id=opts.terminal_id)
    server = uvicorn.Server(uvicorn.Config(app, host=opts.host, port=opts.port, log_level="warning", access_log=False,
                                           log_config=None, proxy_headers=False))
    stop = asyncio.Event()
    sync = asyncio.create_task(syncer.run(stop))
    print(f"terminal {opts.terminal_id}: open http://{opts.host}:{opts.port}/ in the browser "
          f"(server {opts.server_url}, cache {opts.cache_dir})", flush=True)
    try:
        await server.serve()
    finally:
        stop.set()
        await sync
        await syncer.client.aclose()
        syncer.cache.close()


__all__ = ["AgentOptions", "KeyFileError", "SyncError", "build", "options", "read_key_file", "run_forever", "run_once"]
