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
