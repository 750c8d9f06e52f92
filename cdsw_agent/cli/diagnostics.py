"""`cdsw validate` (can this host take the workbench?) and `cdsw logs` (a diagnostic bundle)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Tuple

import click

from .context import CliContext, pass_ctx


@click.command("validate")
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@pass_ctx
def validate_command(ctx: CliContext, strict: bool) -> None:
    """Check this host before installing: Python, disk, port, Docker, cgroups, DNS, clock.

    Exits 1 when a check fails (or, with --strict, warns)."""
    from ..health import Status, report
    from ..health.validate import VALIDATE

    results = VALIDATE.run(ctx.settings)
    for r in results:
        click.echo(report.line(r))
    failed = [r for r in results if r.status == Status.CRITICAL]
    warned = [r for r in results if r.status in (Status.WARNING, Status.UNKNOWN)]
    if failed or (strict and warned):
        click.echo("validate: %d failed, %d warning(s); fix them before installing"
                   % (len(failed), len(warned)), err=True)
        sys.exit(1)
    click.echo("validate: host ready%s" % (" (%d warning(s))" % len(warned) if warned else ""))


@click.command("logs")
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Bundle file to write (default: DATA_DIR/diagnostics/cdsw-logs-HOST-TIME"
                   ".tar.gz).")
@click.option("--role-logs", "role_logs", multiple=True,
              type=click.Path(file_okay=False, exists=True),
              help="Another directory of role logs to include (repeatable); Ambari's "
                   "/var/log/cdsw and the CDSW roles' Cloudera Manager process dirs are found.")
@pass_ctx
def logs_command(ctx: CliContext, out: Optional[str], role_logs: Tuple[str, ...]) -> None:
    """Write a diagnostic bundle (configuration, health, versions, Docker state, the roles',
    engines' and runs' logs), secrets redacted, to attach to a support request."""
    from ..health import bundle

    path = bundle.build(ctx.settings, Path(out) if out else None,
                        role_logs=[Path(d) for d in role_logs])
    click.echo(str(path))


# the commands this module adds to `cdsw`
commands = (validate_command, logs_command)
