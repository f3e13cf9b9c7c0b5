"""Patient data stays where it belongs (issue 13, item 4): third-party log lines go through
the redactor without file names, uvicorn logs through our handler, the CLI prints no file
names, HTTP 422 bodies name fields but never a key the request made up, and server data and
log directories are the owner's alone."""

from __future__ import annotations

import ast
import io
import json
import logging
import os
from pathlib import Path

import httpx
import pytest
import structlog

from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PATIENT = "P-990077"
NAME = "Ada Byron-Lovelace"


def test_tifffile_warnings_reach_our_handler_without_the_file_name(capture: io.StringIO, tmp_path: Path) -> None:
    """Failed before: tifffile's own line named the file, whose name carries the patient ID."""
    import numpy as np
    import tifffile

    path = tmp_path / f"{PATIENT}+E-1+1.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    with tifffile.TiffFile(path) as tif:
        tifffile.logger().warning(f"{tif!r} invalid tag")  # as tifffile words its warnings
    logging.getLogger("PIL.TiffImagePlugin").warning("cannot read %s", str(path))
    text = capture.getvalue()
    assert PATIENT not in text and str(tmp_path) not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["logger"] for line in lines] == ["tifffile", "PIL.TiffImagePlugin"]
    assert lines[0]["event"] == "<tifffile.TiffFile [file]> invalid tag"
    assert lines[1]["event"] == "cannot read [file]"


def _uvicorn_configs() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in REPO.glob("*/**/*.py"):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("uvicorn.Config", "Config", "uvicorn.run"):
                calls.append((str(path.relative_to(REPO)), node))
    return calls


def test_every_uvicorn_server_logs_through_our_handler() -> None:
    """Failed before: the viewer and the HIS ran uvicorn with its own logging config, whose
    handlers print outside the redactor."""
    calls = _uvicorn_configs()
    assert {where for where, _ in calls} >= {"viewer/serve.py", "his/serve.py"}
    for where, call in calls:
        options = {kw.arg: ast.unparse(kw.value) for kw in call.keywords}
        assert options.get("log_config") == "None", f"{where}: uvicorn must not install its own log handlers"
        assert options.get("access_log") == "False", f"{where}: access lines carry request paths and queries"


def test_uvicorn_with_log_config_none_logs_through_the_redactor(capture: io.StringIO) -> None:
    import uvicorn

    async def app(scope, receive, send) -> None:  # pragma: no cover - never called
        raise AssertionError

    uvicorn.Config(app, log_level="warning", access_log=False, log_config=None)
    logging.getLogger("uvicorn.error").warning("bad request from %s", "x", extra={"patient_id": PATIENT})
    line = json.loads(capture.getvalue().splitlines()[-1])
    assert line["logger"] == "uvicorn.error" and "patient_ref" in line and PATIENT not in capture.getvalue()


def test_ingest_errors_do_not_print_the_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Failed before: ``slidestream ingest: P-990077+E-1+1.svs: file is empty``."""
    from slidestream.cli import main

    monkeypatch.setenv("SLIDESTREAM_STATE_DIR", str(tmp_path / "state"))
    scan = tmp_path / f"{PATIENT}+E-1+1.svs"
    scan.write_bytes(b"")
    try:
        code = main(["ingest", str(scan), "--patient", "P-1", "--exam", "E-1", "--slide", "1"])
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert code == 1 and "file is empty" in err and PATIENT not in err and ".svs" not in err


def test_oserror_descriptions_drop_the_path() -> None:
    from slidestream.commands.scanner import _without_file_names

    error = FileNotFoundError(2, "No such file or directory", f"/scans/{PATIENT}.svs")
    assert _without_file_names(error) == "FileNotFoundError: No such file or directory"
    assert _without_file_names(ConnectionError("Kafka not reachable")) == "ConnectionError: Kafka not reachable"


async def test_viewer_422_names_fields_but_never_a_key_from_the_request(tmp_path: Path) -> None:
    """Failed before: the detail read ``Ada Byron-Lovelace: Extra inputs are not permitted``."""
    from viewer.app import create_app

    app = create_app(Settings(state_dir=tmp_path))
    app.state.viewer = object()  # the request is refused before anything uses the context
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://viewer") as client:
        reply = await client.post("/api/auth/login", json={"username": "u", "password": 5, NAME: PATIENT})
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert "password" in detail and "(unexpected key)" in detail
    assert NAME not in reply.text and PATIENT not in reply.text


def test_server_data_and_log_directories_are_the_owners_alone(tmp_path: Path) -> None:
    """Failed before: created with the default mode (0755 under the usual umask)."""
    from infra.layout import Layout
    from infra.process import spawn
    from infra.server import Server

    class Demo(Server):
        name = "demo"
        host, port = "127.0.0.1", 1

        def build(self, echo) -> None: ...

        def ready(self, *args, **kwargs) -> bool:
            return True

        def argv(self) -> list[str]:
            return ["sleep", "30"]

    layout = Layout(tmp_path / "state", tmp_path / "cache")
    server = Demo(Settings(state_dir=tmp_path / "state"), layout)
    loose = server.data_dir
    loose.mkdir(parents=True, mode=0o755)
    os.chmod(loose, 0o755)
    server.prepare(print)  # an existing directory is tightened too
    process = spawn(server.argv(), log_path=server.log_file, pid_path=server.pid_file)
    try:
        for directory in (server.data_dir, server.log_file.parent, server.pid_file.parent):
            assert directory.stat().st_mode & 0o777 == 0o700, directory
        assert server.log_file.stat().st_mode & 0o777 == 0o600
    finally:
        process.kill()
        process.wait()


def test_the_state_dir_itself_stays_traversable_for_servers_run_as_another_user(tmp_path: Path) -> None:
    from infra.process import private_dir

    private_dir(tmp_path / "state" / "minio")
    assert (tmp_path / "state").stat().st_mode & 0o005 == 0o005 or os.geteuid() != 0


async def test_his_422_names_fields_but_never_a_key_or_value_from_the_message() -> None:
    """Failed before: the HIS answered ``Ada Byron-Lovelace: Extra inputs are not permitted``."""
    from his.adapter import HisAdapter
    from his.auth import ApiKeys, key_digest, new_key
    from his.http import create_http_app

    published: list[object] = []

    async def sink(event: object, *, partition: int | None = None) -> None:
        published.append(event)

    key = new_key()
    app = create_http_app(HisAdapter(sink), ApiKeys({"epic": key_digest(key)}))
    body = {"patient_id": PATIENT, "admitted_at": "yesterday", "identity": {"name": NAME, NAME: 1}, NAME: PATIENT}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://his") as client:
        reply = await client.post("/v1/admissions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 422 and published == []
    assert "admitted_at" in reply.json()["fields"] and "identity.(unexpected key)" in reply.json()["fields"]
    assert NAME not in reply.text and PATIENT not in reply.text and "Byron" not in reply.text
