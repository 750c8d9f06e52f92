"""`cdsw role NAME start|status|prepare`: what Cloudera Manager and Ambari exec."""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import UserError
from ..roles import ROLE_NAMES
from .context import CliContext, pass_ctx


def _module(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module("cdsw_agent.roles." + name)


@click.group("role")
def command() -> None:
    """Run a gateway role in the foreground (docker, master, worker)."""


@command.command("start")
@click.argument("name", type=click.Choice(ROLE_NAMES))
@pass_ctx
def start(ctx: CliContext, name: str) -> None:
    """Start role NAME in the foreground; SIGTERM stops it."""
    _module(name).start(ctx.settings)


@command.command("status")
@click.argument("name", type=click.Choice(ROLE_NAMES))
@pass_ctx
def status(ctx: CliContext, name: str) -> None:
    """Exit 0 when role NAME runs on this host, 3 when it does not."""
    running = _module(name).status(ctx.settings)
    click.echo("%s: %s" % (name, "running" if running else "not running"))
    sys.exit(0 if running else 3)


@command.command("prepare")
@click.argument("name", type=click.Choice(ROLE_NAMES))
@pass_ctx
def prepare(ctx: CliContext, name: str) -> None:
    """Check and prepare this host for role NAME; one line per problem."""
    problems = _module(name).prepare(ctx.settings)
    for p in problems:
        click.echo("FAIL %s" % p, err=True)
    if problems:
        raise UserError("%d problem(s) found for the %s role" % (len(problems), name))
    click.echo("%s role: host ready" % name)
