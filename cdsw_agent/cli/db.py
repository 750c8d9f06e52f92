"""`cdsw db`: schema migrations and backups."""

from __future__ import annotations

import click

from .context import CliContext, pass_ctx


@click.group("db")
def command() -> None:
    """Manage the workbench database."""


@command.command("upgrade")
@click.option("--no-backup", is_flag=True, help="Skip the backup taken before an upgrade.")
@pass_ctx
def upgrade(ctx: CliContext, no_backup: bool) -> None:
    """Migrate the schema to the newest revision (backing up first)."""
    db = ctx.database()
    before = db.current_revision()
    if before == db.head_revision():
        click.echo("database %s is at %s, nothing to do" % (db.display_url, before))
        return
    if no_backup:
        db.upgrade()
    else:
        backup = db.upgrade_with_backup(ctx.settings.backups_dir)
        if backup:
            click.echo("backup written to %s" % backup)
    click.echo("database %s upgraded from %s to %s" % (db.display_url, before or "empty",
                                                       db.head_revision()))


@command.command("current")
@pass_ctx
def current(ctx: CliContext) -> None:
    """Print the schema revision and whether it is the newest."""
    db = ctx.database()
    rev, head = db.current_revision(), db.head_revision()
    state = "up to date" if rev == head else "needs `cdsw db upgrade` to %s" % head
    click.echo("%s (%s)" % (rev or "empty", state))


@command.command("backup")
@click.option("--label", default="manual", show_default=True, help="Word added to the file name.")
@pass_ctx
def backup(ctx: CliContext, label: str) -> None:
    """Back up the database into the data directory's backups folder."""
    path = ctx.database().backup(ctx.settings.backups_dir, label=label)
    click.echo(str(path))
