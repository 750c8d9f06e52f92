"""`cdsw`: the workbench's command line. Subcommands live in one module each."""

from __future__ import annotations

import sys
from typing import Any, List, Optional

import click

from .. import __version__
from ..errors import UserError
from ..settings import ConfigError
from ..store.db import DatabaseError
from .context import CliContext

CONTEXT = {"help_option_names": ["-h", "--help"]}


class CdswGroup(click.Group):
    """Turns the errors users can fix into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            click.echo("cdsw: configuration error: %s" % e, err=True)
            sys.exit(2)
        except (UserError, DatabaseError) as e:
            click.echo("cdsw: error: %s" % e, err=True)
            sys.exit(getattr(e, "exit_code", 1))


@click.group("cdsw", cls=CdswGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="cdsw")
@click.option("--conf", envvar="CDSW_CONF", metavar="PATH",
              help="CDSW-style cdsw.conf (default /etc/cdsw/config/cdsw.conf if present).")
@click.option("--properties", envvar="CDSW_PROPERTIES", metavar="PATH",
              help="cdsw.properties rendered by Cloudera Manager or Ambari.")
@click.pass_context
def cli(ctx: click.Context, conf: Optional[str], properties: Optional[str]) -> None:
    """Manage the CDSW workbench: its roles, database, accounts and configuration."""
    ctx.obj = CliContext(conf, properties)


def _register() -> None:
    from . import (admin, clientconfig, clusters, config, db, diagnostics, health, hosts, images,
                   models, role, standalone, status)

    for module in (config, db, admin, role, standalone, health, status, clientconfig, clusters,
                   hosts, images, models):
        cli.add_command(module.command)
    for command in diagnostics.commands:  # validate, logs
        cli.add_command(command)


_register()


def main(argv: Optional[List[str]] = None) -> None:
    cli.main(args=argv, prog_name="cdsw")


if __name__ == "__main__":
    main()
