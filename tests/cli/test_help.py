"""Every command's --help reads well and unimplemented ones say so instead of faking output."""

from __future__ import annotations

import pytest

from freshrank.cli import build_parser, main
from freshrank.cli.bench import BENCHMARKS

COMMANDS = [
    "operator",
    "feature",
    "trainer",
    "ranking",
    "stack",
    "simulate",
    "demo",
    "bench",
    "eval",
]


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command}" in out


@pytest.mark.parametrize("command", [*COMMANDS, *(f"bench {b}" for b in BENCHMARKS)])
def test_each_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: freshrank " + command)
    assert len(out.splitlines()) > 3


def test_parser_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
