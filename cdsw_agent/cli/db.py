"""`cdsw db`: schema migrations, backups and restores."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..store.db import DatabaseError
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
    problem = db.unknown_revision_problem(before)
    if problem:  # before any backup: a restart loop must not fill the disk with them
        raise DatabaseError(problem)
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
    if rev == head:
        state = "up to date"
    elif rev is not None and not db.knows_revision(rev):
        state = ("newer than this version of the workbench, whose newest is %s: install the "
                 "version that upgraded it" % head)
    else:
        state = "needs `cdsw db upgrade` to %s" % head
    click.echo("%s (%s)" % (rev or "empty", state))


@command.command("backup")
@click.option("--label", default="manual", show_default=True, help="Word added to the file name.")
@click.option("--with-files", is_flag=True,
              help="Also include the project files: writes one .tar.gz archive.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory to write to (default: the backups folder of the data directory).")
@pass_ctx
def backup(ctx: CliContext, label: str, with_files: bool, out: Optional[Path]) -> None:
    """Back up the database (and with --with-files the project files)."""
    out_dir = out or ctx.settings.backups_dir
    db = ctx.database()
    if with_files:
        path = db.backup_with_files(out_dir, ctx.settings.projects_dir, label=label)
    else:
        path = db.backup(out_dir, label=label)
    click.echo(str(path))


@command.command("restore")
@click.argument("backup", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def restore(ctx: CliContext, backup: Path) -> None:
    """Replace the database (and project files, from a --with-files archive) with BACKUP.

    The master must be stopped. What is replaced is kept: SQLite files are renamed aside,
    PostgreSQL is dumped to the backups folder first, project folders are renamed aside.
    """
    from ..store.restore import restore as do_restore

    settings = ctx.settings
    for line in do_restore(ctx.database(), backup, settings.data_dir, settings.projects_dir,
                           settings.backups_dir):
        click.echo(line)
