"""The `slidestream` command line: subcommands parse, and delegated ones reach their tool."""

from __future__ import annotations

import pytest

from slidestream.cli import build_parser, main


@pytest.mark.parametrize("argv", [["up", "--workers", "2"], ["down"], ["status", "--probe-only"],
                                  ["logs", "kafka"], ["demo", "--stop"]])
def test_stack_commands_parse(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]


def test_unknown_log_service_is_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["logs", "postgres"])
    assert exc.value.code == 2


@pytest.mark.parametrize("command,usage", [("evaluate", "model_zoo.evaluate"), ("train", "model_zoo.train")])
def test_delegated_commands_pass_their_options_on(command: str, usage: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert usage in capsys.readouterr().out


def test_status_lists_the_running_workers(monkeypatch, capsys, tmp_path) -> None:
    """`slidestream status` right after `up` (a worker running) used to crash on a missing field."""
    import infra.stack
    import slidestream.probe
    import slidestream.workers
    from slidestream.workers import WorkerInfo

    async def no_answer(settings, timeout):  # type: ignore[no-untyped-def]  # test double
        raise TimeoutError("no agent")

    monkeypatch.setattr(infra.stack, "status", lambda settings: True)
    monkeypatch.setattr(slidestream.workers, "worker_status",
                        lambda settings: [WorkerInfo(0, 4242, tmp_path / "worker-0.log")])
    monkeypatch.setattr(slidestream.probe, "probe_agents", no_answer)
    assert main(["status", "--timeout", "1"]) == 1  # no agent answered
    out = capsys.readouterr().out
    assert "worker-0: pid 4242 running" in out and "agents: no answer" in out


def test_his_runs_the_adapter_and_his_send_takes_a_message() -> None:
    parser = build_parser()
    assert parser.parse_args(["his"]).func.__name__ == "run"
    args = parser.parse_args(["his", "send", "A03", "--patient", "P-1", "--at", "2026-03-01T12:00:00+01:00"])
    assert (args.func.__name__, args.trigger, args.patient, args.at.utcoffset().total_seconds()) == \
        ("send", "A03", "P-1", 3600)
    with pytest.raises(SystemExit):
        parser.parse_args(["his", "send", "A08", "--patient", "P-1"])  # only admissions and discharges
    with pytest.raises(SystemExit):
        parser.parse_args(["his", "send", "A01", "--patient", "P-1", "--at", "2026-03-01T12:00:00"])  # no zone


def test_operator_commands_parse_their_arguments() -> None:
    from datetime import UTC, datetime, timedelta

    parser = build_parser()
    args = parser.parse_args(["slide", "E-1", "3"])
    assert (args.exam_id, args.slide_number) == ("E-1", 3)
    since = parser.parse_args(["dead-letters", "--since", "2h"]).since
    assert abs((datetime.now(UTC) - timedelta(hours=2) - since).total_seconds()) < 60
    assert parser.parse_args(["dead-letters", "--since", "2026-11-26T08:00"]).since.tzinfo is UTC
    assert parser.parse_args(["dead-letters"]).since < datetime.now(UTC)  # default: the last 24 h
    with pytest.raises(SystemExit):
        parser.parse_args(["dead-letters", "--since", "yesterday-ish"])


def test_convert_lr_writes_an_openslide_readable_copy_and_never_overwrites(tmp_path, capsys) -> None:
    import numpy as np
    import openslide

    from slide_io import Compression, write_pyramid

    pixels = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    source, target = tmp_path / "slide-0001.lr.tiff", tmp_path / "slide-0001.zstd.tiff"
    write_pyramid(pixels, source, mpp=2.0, magnification=5.0, compression=Compression.AVIF)
    assert main(["convert-lr", str(source), str(target)]) == 0
    assert "(avif)" in capsys.readouterr().out
    with openslide.OpenSlide(str(target)) as slide:
        assert slide.level_dimensions[0] == (400, 300)
    before = target.read_bytes()
    assert main(["convert-lr", str(source), str(target), "--compression", "jpeg"]) == 2
    assert "exists" in capsys.readouterr().err and target.read_bytes() == before
    broken = tmp_path / "broken.tiff"
    broken.write_bytes(source.read_bytes()[:2000])  # truncated upload
    assert main(["convert-lr", str(broken), str(tmp_path / "out.tiff")]) == 2
    assert "slidestream convert-lr:" in capsys.readouterr().err
    assert not (tmp_path / "out.tiff").exists() and not (tmp_path / "out.tiff.partial").exists()
