"""Every command answers --help; the root answers --version."""

from __future__ import annotations

from typing import Iterator, List, Tuple

import click
from click.testing import CliRunner

from cdsw_agent import __version__
from cdsw_agent.cli.main import cli


def walk(group: click.Group, path: List[str]) -> Iterator[Tuple[List[str], click.Command]]:
    for name, cmd in group.commands.items():
        yield path + [name], cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, path + [name])


def test_every_command_has_help() -> None:
    runner = CliRunner()
    paths = list(walk(cli, []))
    assert len(paths) > 20
    for path, cmd in paths:
        r = runner.invoke(cli, path + ["--help"])
        assert r.exit_code == 0, (path, r.output)
        assert "Usage: cdsw " + " ".join(path) in r.output
        assert cmd.get_short_help_str(), "command %s has no help text" % " ".join(path)


def test_version() -> None:
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == "cdsw, version %s" % __version__
