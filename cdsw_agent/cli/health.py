"""`cdsw health`: run the health checks; the exit code is what Nagios and Ambari SCRIPT alerts
expect (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; the worst check wins)."""

from __future__ import annotations

import json
import sys
from typing import Optional, Tuple

import click

from ..roles import ROLE_NAMES
from ..settings import ConfigError
from .context import CliContext, pass_ctx

UNKNOWN_EXIT = 3


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of lines.")
@click.option("--check", "checks", multiple=True, metavar="NAME",
              help="Run only this check (repeatable).")
@click.option("--role", type=click.Choice(ROLE_NAMES), help="Run the checks of this role only.")
@click.option("--list", "list_checks", is_flag=True, help="List the checks and exit.")
@pass_ctx
def command(ctx: CliContext, as_json: bool, checks: Tuple[str, ...], role: Optional[str],
            list_checks: bool) -> None:
    """Check this host's part of the workbench; one line per check."""
    from ..health import REGISTRY, UnknownCheck, report

    if list_checks:
        for c in REGISTRY.select(role=role):
            click.echo("%-22s %-20s %s" % (c.name, ",".join(sorted(c.roles)), c.description))
        return
    try:
        selected = REGISTRY.select(list(checks), role)
        if not selected:
            raise UnknownCheck(list(checks), [c.name for c in REGISTRY.select(role=role)])
        settings = ctx.settings
    except (UnknownCheck, ConfigError) as e:
        # Nagios: UNKNOWN when the check itself cannot run
        message = str(e) if isinstance(e, UnknownCheck) else "configuration: %s" % e
        if as_json:
            click.echo(json.dumps({"status": "UNKNOWN", "code": UNKNOWN_EXIT, "error": message}))
        else:
            click.echo("UNKNOWN  %s" % message, err=True)
        sys.exit(UNKNOWN_EXIT)
    results = REGISTRY.run(settings, names=[c.name for c in selected])
    if as_json:
        click.echo(json.dumps(report.document(results, role or ""), indent=2, default=str))
    else:
        for r in results:
            click.echo(report.line(r))
    sys.exit(report.exit_code(results))
