"""`cdsw admin`: accounts from the command line (the first administrator, resets, unlocks)."""

from __future__ import annotations

import sys
from typing import Optional

import click

from .. import accounts
from ..errors import UserError
from ..security.passwords import Passwords, generate_password
from ..store.models import AuditEvent
from .context import CliContext, pass_ctx


@click.group("admin")
def command() -> None:
    """Manage user accounts."""


def _read_password(password_stdin: bool, generate: bool) -> tuple:
    if password_stdin and generate:
        raise UserError("use either --password-stdin or --generate-password")
    if generate:
        return generate_password(), True
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UserError("no password on standard input")
        return line, False
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for a password; use --password-stdin or "
                        "--generate-password")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True), False


def _ready_db(ctx: CliContext):  # type: ignore[no-untyped-def]
    db = ctx.database()
    if db.needs_upgrade():
        raise UserError("the database schema is not current; run `cdsw db upgrade` first")
    return db


@command.command("create-user")
@click.argument("username")
@click.option("--admin", "is_admin", is_flag=True, help="Make the user a site administrator.")
@click.option("--email", default="", help="E-mail address.")
@click.option("--full-name", default="", help="Full name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--generate-password", "generate", is_flag=True,
              help="Generate a password and print it once.")
@click.option("--ldap", "ldap", is_flag=True, help="An account that signs in through LDAP.")
@pass_ctx
def create_user(ctx: CliContext, username: str, is_admin: bool, email: str, full_name: str,
                password_stdin: bool, generate: bool, ldap: bool) -> None:
    """Create a user (the first administrator, typically)."""
    db = _ready_db(ctx)
    settings = ctx.settings
    password: Optional[str] = None
    generated = False
    if not ldap:
        password, generated = _read_password(password_stdin, generate)
    passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)
    with db.session() as s:
        user = accounts.create_user(s, passwords, settings, username, password, email=email,
                                    full_name=full_name, is_admin=is_admin,
                                    auth_source="ldap" if ldap else "local")
        s.add(AuditEvent(actor="cli", action="user.create", target=user.username,
                         detail={"is_admin": is_admin}))
    click.echo("created %s%s" % ("administrator " if is_admin else "user ", user.username))
    if generated:
        click.echo("password: %s" % password)


@command.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@click.option("--generate-password", "generate", is_flag=True,
              help="Generate a password and print it once.")
@pass_ctx
def reset_password(ctx: CliContext, username: str, password_stdin: bool, generate: bool) -> None:
    """Set a new password for a local account and unlock it."""
    db = _ready_db(ctx)
    settings = ctx.settings
    password, generated = _read_password(password_stdin, generate)
    passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)
    with db.session() as s:
        user = accounts.find_user(s, username)
        if user is None:
            raise UserError("no user named %r" % username)
        accounts.set_password(passwords, settings, user, password)
        accounts.unlock(s, user)
        s.add(AuditEvent(actor="cli", action="user.password.reset", target=user.username, detail={}))
    click.echo("password of %s changed" % user.username)
    if generated:
        click.echo("password: %s" % password)


@command.command("unlock")
@click.argument("username")
@pass_ctx
def unlock(ctx: CliContext, username: str) -> None:
    """Unlock an account locked after failed sign-ins."""
    db = _ready_db(ctx)
    with db.session() as s:
        user = accounts.find_user(s, username)
        if user is None:
            raise UserError("no user named %r" % username)
        accounts.unlock(s, user)
        s.add(AuditEvent(actor="cli", action="user.unlock", target=user.username, detail={}))
    click.echo("%s unlocked" % username)
