"""`cdsw role NAME start|status|prepare`: what Cloudera Manager and Ambari exec.

NAME is docker (CDSW_DOCKER), master (CDSW_MASTER) or worker (CDSW_WORKER); each
role lives in cdsw_agent/roles/NAME.py with start(), status() and prepare().
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import click

from ..errors import UserError
from ..roles import ROLE_NAMES
from .context import CliContext, pass_ctx

DESCRIPTIONS = {
    "docker": "CDSW_DOCKER: the Docker daemon of a gateway host.",
    "master": "CDSW_MASTER: the web app, API, scheduler and swarm manager.",
    "worker": "CDSW_WORKER: a gateway that runs engines for the master.",
}


def _module(name: str) -> ModuleType:
    return importlib.import_module("cdsw_agent.roles." + name)


@click.group("role")
def command() -> None:
    """Run a gateway role in the foreground: cdsw role NAME start|status|prepare."""


def _role_group(name: str) -> click.Group:
    @click.group(name, help=DESCRIPTIONS[name])
    def group() -> None:
        pass

    @group.command("start")
    @pass_ctx
    def start(ctx: CliContext) -> None:
        """Start the role in the foreground; SIGTERM stops it."""
        _module(name).start(ctx.settings)

    @group.command("status")
    @pass_ctx
    def status(ctx: CliContext) -> None:
        """Exit 0 when the role runs on this host, 3 when it does not."""
        running = _module(name).status(ctx.settings)
        click.echo("%s: %s" % (name, "running" if running else "not running"))
        sys.exit(0 if running else 3)

    @group.command("prepare")
    @pass_ctx
    def prepare(ctx: CliContext) -> None:
        """Check and prepare this host for the role; one line per problem."""
        problems = _module(name).prepare(ctx.settings)
        for p in problems:
            click.echo("FAIL %s" % p, err=True)
        if problems:
            raise UserError("%d problem(s) found for the %s role" % (len(problems), name))
        click.echo("%s role: host ready" % name)

    return group


for _name in ROLE_NAMES:
    command.add_command(_role_group(_name))
