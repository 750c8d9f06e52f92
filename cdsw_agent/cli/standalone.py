"""`cdsw standalone`: the whole workbench on this host with its embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click

from .. import bootstrap, standalone
from ..roles import master
from . import instance
from .context import CliContext, pass_ctx


def default_data_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/cdsw"
    return str(Path.home() / ".local" / "share" / "cdsw")


@click.command("standalone")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where state is kept.")
@click.option("--port", type=int, help="HTTP port (default 8080).")
@click.option("--bind", "bind_address", help="Listen address (default 127.0.0.1).")
@pass_ctx
def command(ctx: CliContext, data_dir: Optional[str], port: Optional[int],
            bind_address: Optional[str]) -> None:
    """Set up and start the workbench on this host, in the foreground."""
    ctx.discover_instance = False
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
    if settings.source_of("docker_data_root").kind == "default" and "data_dir" in overrides:
        overrides["docker_data_root"] = os.path.join(overrides["data_dir"], "docker")
    ctx.override(**overrides)
    settings = ctx.settings

    click.echo("==> data directory %s" % settings.data_dir)
    problems = master.prepare(settings)
    if problems:
        for p in problems:
            click.echo("FAIL %s" % p, err=True)
        raise SystemExit(1)
    click.echo("==> database %s" % ctx.database().display_url)
    db = master.prepare_database(settings)
    engines = standalone.prepare_engines(settings, db, lambda line: click.echo(line, err=True))
    settings = engines.settings
    if settings.orchestrator == "local":
        click.echo("!!! Engines run as plain local processes (orchestrator=local), without "
                   "container isolation; see the lines above for why Docker is not used.", err=True)
    else:
        click.echo("==> engines run in containers on Docker Swarm (image %s)" % engines.image)
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
    record = instance.register(settings)
    if record:
        click.echo("  `cdsw status` and `cdsw health` find this instance through %s" % record)
    else:
        click.echo("!!! another workbench instance is registered in %s; `cdsw status` reports "
                   "that one (pass --properties %s for this one)" % (
                       instance.pointer_path(),
                       Path(settings.data_dir) / "run" / "instance.properties"), err=True)
    click.echo("")
    try:
        master.start(settings, db)
    finally:
        if record:
            instance.unregister(record)
        engines.stop()
