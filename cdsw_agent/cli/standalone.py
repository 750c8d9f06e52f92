"""`cdsw standalone`: the whole workbench on this host with its embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click

from .. import bootstrap
from ..roles import master
from .context import CliContext, pass_ctx


def default_data_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/cdsw"
    return str(Path.home() / ".local" / "share" / "cdsw")


def docker_answers(url: str) -> bool:
    try:
        import docker

        client = docker.DockerClient(base_url=url, timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # not installed, no socket, refused: all mean "no Docker here"
        return False


@click.command("standalone")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where state is kept.")
@click.option("--port", type=int, help="HTTP port (default 8080).")
@click.option("--bind", "bind_address", help="Listen address (default 127.0.0.1).")
@pass_ctx
def command(ctx: CliContext, data_dir: Optional[str], port: Optional[int],
            bind_address: Optional[str]) -> None:
    """Set up and start the workbench on this host, in the foreground."""
    settings = ctx.settings
    overrides = {}
    if data_dir:
        overrides["data_dir"] = os.path.abspath(data_dir)
    elif settings.source_of("data_dir").kind == "default":
        overrides["data_dir"] = default_data_dir()
    if port:
        overrides["http_port"] = port
    if bind_address:
        overrides["bind_address"] = bind_address
    elif settings.source_of("bind_address").kind == "default":
        overrides["bind_address"] = "127.0.0.1"
    if settings.source_of("domain").kind == "default":
        overrides["domain"] = "localhost"
    if settings.source_of("orchestrator").kind == "default":
        overrides["orchestrator"] = "swarm" if docker_answers(settings.docker_host) else "local"
    ctx.override(**overrides)
    settings = ctx.settings
    if settings.orchestrator == "local":
        click.echo("!!! No Docker engine answers on %s: engines will run as plain local processes "
                   "(orchestrator=local), without container isolation. Start the CDSW_DOCKER role "
                   "(`cdsw role docker start`) and restart to use containers." % settings.docker_host,
                   err=True)

    click.echo("==> data directory %s" % settings.data_dir)
    problems = master.prepare(settings)
    if problems:
        for p in problems:
            click.echo("FAIL %s" % p, err=True)
        raise SystemExit(1)
    click.echo("==> database %s" % ctx.database().display_url)
    db = master.prepare_database(settings)
    bootstrap.seed_defaults(db)
    created = bootstrap.ensure_first_admin(db, settings)
    click.echo("")
    click.echo("  CDSW workbench: %s" % settings.base_url)
    if created:
        click.echo("  administrator:  %s" % created[0])
        click.echo("  password:       %s   (shown once; change it under Account)" % created[1])
    else:
        click.echo("  administrator:  exists already (reset with `cdsw admin reset-password "
                   "admin --generate-password`)")
    click.echo("")
    master.start(settings, db)
