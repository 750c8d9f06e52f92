"""`cdsw config`: show, render and describe the settings."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..render import render_all
from ..settings import SETTINGS, masked
from .context import CliContext, pass_ctx


@click.group("config")
def command() -> None:
    """Inspect and render the configuration."""


@command.command("show")
@click.option("--sources", is_flag=True, help="Also say where each value came from.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def show(ctx: CliContext, sources: bool, as_json: bool) -> None:
    """Print the effective settings, secrets masked."""
    rows = [(s, masked(s, value), src) for s, value, src in ctx.settings.items()]
    if as_json:
        click.echo(json.dumps({s.name: ({"value": v, "source": str(src)} if sources else v)
                               for s, v, src in rows}, indent=2))
        return
    width = max(len(s.property_key) for s, _, _ in rows)
    for s, v, src in rows:
        line = "%-*s = %s" % (width, s.property_key, v)
        if sources:
            line = "%-*s   [%s]" % (width + 40, line, src)
        click.echo(line.rstrip())


@command.command("render")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the rendered files into.")
@click.option("--reveal-secrets", is_flag=True,
              help="Write secrets in clear (files become mode 0600); masked by default.")
@pass_ctx
def render_cmd(ctx: CliContext, out_dir: str, reveal_secrets: bool) -> None:
    """Render every configuration template into a folder."""
    for path in render_all(ctx.settings, Path(out_dir), reveal_secrets):
        click.echo(str(path))


@command.command("schema")
def schema() -> None:
    """Print every setting with its type, default, limits and keys, as JSON.

    The CSD descriptor and the Ambari configuration files are generated from this."""
    out = []
    for s in SETTINGS:
        out.append({
            "name": s.name, "type": s.kind, "default": s.default, "description": s.description,
            "property": s.property_key, "env": s.env_var, "conf_key": s.conf_key,
            "secret": s.secret, "choices": list(s.choices), "minimum": s.minimum,
            "maximum": s.maximum, "group": s.group, "required_in_cluster": s.required_in_cluster,
        })
    click.echo(json.dumps(out, indent=2))
