"""`cdsw clusters`: the Hadoop clusters behind this workbench and who may run work on them
(cdsw_agent/clusters holds the rules)."""

from __future__ import annotations

import json
from typing import Optional

import click
from sqlalchemy import select

from .. import clusters
from ..errors import UserError
from ..store.models import AuditEvent, Project, Team, User
from .context import CliContext, pass_ctx


@click.group("clusters")
def command() -> None:
    """Register clusters (DEV, PROD, ...) and grant who may run work on them."""


def _db(ctx: CliContext):  # type: ignore[no-untyped-def]
    db = ctx.database()
    if db.needs_upgrade():
        raise UserError("the database schema is not current; run `cdsw db upgrade` first")
    return db


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of lines.")
@pass_ctx
def list_cmd(ctx: CliContext, as_json: bool) -> None:
    """Every cluster: kind, node label, client configuration, grants, projects."""
    with _db(ctx).session() as s:
        clusters.default_cluster(s)
        rows = []
        for c in clusters.all_clusters(s):
            projects = s.scalars(select(Project.id).where(
                (Project.cluster_id == c.id) | (Project.cluster_id.is_(None) if c.is_default
                                                else False))).all()
            rows.append({
                "name": c.name, "kind": c.kind, "default": c.is_default,
                "node_label": "" if c.is_default else "%s=%s" % (clusters.NODE_LABEL, c.name),
                "client_config": str(clusters.bundles_root(ctx.settings, c)),
                "krb5_conf": c.krb5_conf or ctx.settings.krb5_conf,
                "java_home": c.java_home or ctx.settings.java_home,
                "requires_grant": c.requires_grant,
                "grants": [g for _, g in clusters.grantees(s, c)], "projects": len(projects)})
    if as_json:
        click.echo(json.dumps({"clusters": rows}, indent=2))
        return
    for r in rows:
        who = "open to all" if not r["requires_grant"] else \
            "grants: %s" % (", ".join(r["grants"]) or "site administrators only")
        click.echo("%-10s %-7s %-20s %d projects; %s; client configuration %s" % (
            r["name"], r["kind"], r["node_label"] or "(unlabelled nodes)", r["projects"], who,
            r["client_config"]))


@command.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["dev", "test", "prod"]), default="dev",
              show_default=True)
@click.option("--description", default="")
@click.option("--client-config-dir", default="", metavar="DIR",
              help="Where its client-configuration bundles live (storage every node reads); "
              "default DATA_DIR/clusters/NAME/client-config.")
@click.option("--krb5-conf", default="", metavar="PATH", help="Its krb5.conf (default: the site's).")
@click.option("--java-home", default="", metavar="DIR", help="Its JAVA_HOME (default: the site's).")
@click.option("--open", "open_", is_flag=True,
              help="Every user may run work on it (default: only users and teams granted it).")
@pass_ctx
def add_cmd(ctx: CliContext, name: str, kind: str, description: str, client_config_dir: str,
            krb5_conf: str, java_home: str, open_: bool) -> None:
    """Register a cluster; its gateway workers set workbench_cluster=NAME."""
    with _db(ctx).session() as s:
        c = clusters.register(s, name, kind=kind, description=description,
                              client_config_dir=client_config_dir, krb5_conf=krb5_conf,
                              java_home=java_home, requires_grant=not open_)
        s.add(AuditEvent(actor="cli", action="cluster.add", target=c.name,
                         detail={"kind": kind, "requires_grant": not open_}))
        root = clusters.bundles_root(ctx.settings, c)
    click.echo("cluster %s (%s) registered; on its gateway hosts set workbench_cluster=%s, and "
               "collect its client configuration with `cdsw client-config collect --cluster %s` "
               "(bundles in %s)" % (name, kind, name, name, root))


@command.command("remove")
@click.argument("name")
@pass_ctx
def remove_cmd(ctx: CliContext, name: str) -> None:
    """Remove a cluster that is no project's home."""
    with _db(ctx).session() as s:
        clusters.remove(s, clusters.by_name(s, name))
        s.add(AuditEvent(actor="cli", action="cluster.remove", target=name, detail={}))
    click.echo("cluster %s removed" % name)


def _who(s, user: Optional[str], team: Optional[str]) -> dict:  # type: ignore[no-untyped-def]
    if (user is None) == (team is None):
        raise UserError("name one grantee: --user NAME or --team NAME")
    if user is not None:
        u = s.scalars(select(User).where(User.username == user)).first()
        if u is None:
            raise UserError("no user named %s" % user)
        return {"user": u}
    t = s.scalars(select(Team).where(Team.name == team)).first()
    if t is None:
        raise UserError("no team named %s" % team)
    return {"team": t}


@command.command("grant")
@click.argument("name")
@click.option("--user", default=None, metavar="USERNAME")
@click.option("--team", default=None, metavar="TEAM")
@pass_ctx
def grant_cmd(ctx: CliContext, name: str, user: Optional[str], team: Optional[str]) -> None:
    """Let a user, or every member of a team, run work on the cluster (and review promotions
    into its projects, as their Contributors)."""
    with _db(ctx).session() as s:
        c = clusters.by_name(s, name)
        clusters.grant(s, c, **_who(s, user, team))
        who = "user %s" % user if user else "team %s" % team
        s.add(AuditEvent(actor="cli", action="cluster.grant", target=name,
                         detail={"grantee": who}))
    click.echo("%s may run work on cluster %s" % (who, name))


@command.command("revoke")
@click.argument("name")
@click.option("--user", default=None, metavar="USERNAME")
@click.option("--team", default=None, metavar="TEAM")
@pass_ctx
def revoke_cmd(ctx: CliContext, name: str, user: Optional[str], team: Optional[str]) -> None:
    """Take a grant back."""
    with _db(ctx).session() as s:
        c = clusters.by_name(s, name)
        who = "user %s" % user if user else "team %s" % team
        if not clusters.revoke(s, c, **_who(s, user, team)):
            raise UserError("%s has no grant on cluster %s" % (who, name))
        s.add(AuditEvent(actor="cli", action="cluster.revoke", target=name,
                         detail={"grantee": who}))
    click.echo("%s may no longer run work on cluster %s" % (who, name))
