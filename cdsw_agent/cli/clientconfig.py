"""`cdsw client-config collect|show`: bundle the Hadoop client configuration engines mount."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

import click

from ..clientconfig import KEEP_BUNDLES, bundles_dir, collect, current_version, list_bundles
from ..errors import UserError
from .context import CliContext, pass_ctx


@click.group("client-config")
def command() -> None:
    """The Hadoop client configuration mounted into every engine."""


@command.command("collect")
@click.option("--source", "sources", multiple=True, type=click.Path(file_okay=False),
              metavar="DIR", help="Client configuration directory (repeatable); default: the "
              "hadoop_conf_dirs setting.")
@click.option("--keep", type=click.IntRange(min=1), default=KEEP_BUNDLES, show_default=True,
              help="Newest bundles to keep; the current one is always kept.")
@click.option("--cluster", default="", metavar="NAME",
              help="For the engines of this workbench cluster (`cdsw clusters list`); default: "
              "the default cluster.")
@pass_ctx
def collect_cmd(ctx: CliContext, sources: Tuple[str, ...], keep: int, cluster: str) -> None:
    """Bundle the client configuration for new engines.

    An unchanged configuration reuses its bundle; old bundles are pruned, never the current."""
    dirs = list(sources) or list(ctx.settings.hadoop_conf_dirs)
    if not dirs:
        raise UserError("no client configuration directories: pass --source DIR or set "
                        "hadoop_conf_dirs (cdsw.hadoop.conf.dirs)")
    bundle = collect([Path(d) for d in dirs], _root(ctx, cluster), keep=keep)
    for skipped in bundle.skipped:
        click.echo("skipped %s" % skipped, err=True)
    click.echo("bundle %s (%s): %s" % (bundle.version, "unchanged" if bundle.reused else "new",
                                       ", ".join(bundle.kinds)))
    click.echo(str(bundle.path))


def _root(ctx: CliContext, cluster: str) -> Path:
    """Where the bundles of the named cluster live (the site's for the default cluster)."""
    if not cluster:
        return bundles_dir(ctx.settings)
    from .. import clusters

    db = ctx.database()
    if db.needs_upgrade():
        raise UserError("the database schema is not current; run `cdsw db upgrade` first")
    with db.session() as s:
        return clusters.bundles_root(ctx.settings, clusters.by_name(s, cluster))


@command.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of lines.")
@click.option("--cluster", default="", metavar="NAME", help="The bundles of this cluster.")
@pass_ctx
def show_cmd(ctx: CliContext, as_json: bool, cluster: str) -> None:
    """List the bundles, newest first; * marks the one new engines get."""
    root = _root(ctx, cluster)
    bundles, in_use = list_bundles(root), current_version(root)
    if as_json:
        click.echo(json.dumps({"current": in_use, "bundles": [
            {"version": b.version, "path": str(b.path), "kinds": list(b.kinds),
             "created": b.created, "sources": b.sources, "files": len(b.files),
             "current": b.version == in_use} for b in bundles]}, indent=2))
        return
    if not bundles:
        click.echo("no client configuration bundle in %s; run `cdsw client-config collect`" % root)
        return
    for b in bundles:
        click.echo("%s %s  %s  %-24s %s" % ("*" if b.version == in_use else " ", b.version,
                                             b.created, ",".join(b.kinds),
                                             " ".join(sorted(set(b.sources.values())))))
