"""User accounts: creation, sign-in with lockout, LDAP provisioning, passwords.

One place for these rules, used by the API, `cdsw admin` and `cdsw standalone`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .errors import UserError
from .security import signin_throttle
from .security.passwords import Passwords, check_strength
from .settings import Settings
from .store.models import Team, User, utcnow

log = logging.getLogger(__name__)
USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


INVALID_CREDENTIALS = "invalid username or password"


class SignInError(Exception):
    """Sign-in refused; str() is safe to show (it never says which part was wrong)."""


class SlowDown(SignInError):
    """Too many failures from this client: it must wait; the same answer for every name."""

    def __init__(self, until: dt.datetime, now: dt.datetime):
        self.retry_after = max(1, int((until - now).total_seconds() + 0.999))
        super().__init__("too many failed sign-ins from here; wait %d seconds and try again"
                         % self.retry_after)


@dataclass
class SignInResult:
    user: User
    method: str  # local | ldap


def normalize_username(raw: str) -> str:
    return raw.strip().lower()


def check_username(username: str) -> None:
    if not USERNAME_RE.match(username):
        raise UserError("username %r is not allowed: use 1-64 lowercase letters, digits, '.', "
                        "'_' or '-', starting with a letter" % username)


def name_taken(db: Session, name: str) -> bool:
    """Users and teams share one namespace (both own projects)."""
    return bool(db.scalar(select(func.count()).select_from(User).where(User.username == name))
                or db.scalar(select(func.count()).select_from(Team).where(Team.name == name)))


def create_user(db: Session, passwords: Passwords, settings: Settings, username: str,
                password: Optional[str], *, email: str = "", full_name: str = "",
                is_admin: bool = False, auth_source: str = "local") -> User:
    """Adds a user to the session (not committed). Raises UserError on a bad or taken name."""
    username = normalize_username(username)
    check_username(username)
    if name_taken(db, username):
        raise UserError("the name %r is already taken by a user or team" % username)
    password_hash = None
    if auth_source == "local":
        if password is None:
            raise UserError("a local account needs a password")
        problem = check_strength(password, settings.password_min_length)
        if problem:
            raise UserError(problem)
        password_hash = passwords.hash(password)
    user = User(username=username, email=email, full_name=full_name, is_admin=is_admin,
                password_hash=password_hash, auth_source=auth_source)
    db.add(user)
    db.flush()
    return user


def set_password(passwords: Passwords, settings: Settings, user: User, new_password: str) -> None:
    if user.auth_source != "local":
        raise UserError("%s signs in through %s; change the password there"
                        % (user.username, user.auth_source.upper()))
    problem = check_strength(new_password, settings.password_min_length)
    if problem:
        raise UserError(problem)
    user.password_hash = passwords.hash(new_password)


def find_user(db: Session, username: str) -> Optional[User]:
    return db.scalar(select(User).where(User.username == normalize_username(username)))


def authenticate(db: Session, passwords: Passwords, settings: Settings, username: str,
                 password: str, *, address: str) -> SignInResult:
    """Checks the credentials under the backoff rules of security/signin_throttle.py.

    `address` is the client's address (signin_throttle.client_key). Raises SlowDown while the
    client must wait, SignInError otherwise; both say the same for unknown names and accounts,
    and a password is hashed in both cases (a dummy hash for unknown names). Commits the
    failure counters itself."""
    name = normalize_username(username)[:64]
    now = utcnow()
    throttle = signin_throttle.Throttle(db, settings, name, address)
    wait_until = throttle.check(now)
    db.commit()  # ends the read (SQLite cannot turn a read into a write once another wrote)
    if wait_until is not None:
        raise SlowDown(wait_until, now)
    reservation = throttle.reserve(now)
    user = find_user(db, name) if USERNAME_RE.match(name) else None
    if user is not None:  # the administrators' view of the account counter, counted atomically
        db.execute(update(User).where(User.id == user.id).values(
            failed_logins=User.failed_logins + 1, locked_until=reservation.account_until))
    db.commit()
    if reservation.wait_until is not None:
        raise SlowDown(reservation.wait_until, now)

    method = None
    if user is None or user.auth_source == "local":
        if passwords.verify(user.password_hash if user else None, password) and user is not None:
            method = "local"
            if user.password_hash and passwords.needs_rehash(user.password_hash):
                user.password_hash = passwords.hash(password)
    if method is None and settings.ldap_url and (user is None or user.auth_source == "ldap"):
        user = _ldap_sign_in(db, settings, name, password, user)
        method = "ldap" if user is not None else None
    if method is None or user is None:
        db.rollback()
        raise SignInError(INVALID_CREDENTIALS)
    if not user.is_active:
        db.rollback()
        raise SignInError("this account is disabled; ask an administrator")
    throttle.succeeded()
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    return SignInResult(user, method)


def unlock(db: Session, user: User) -> None:
    """An administrator lets the user in again at once, from anywhere."""
    user.failed_logins = 0
    user.locked_until = None
    signin_throttle.forget_account(db, user.username)


def _ldap_sign_in(db: Session, settings: Settings, username: str, password: str,
                  user: Optional[User]) -> Optional[User]:
    from .security import ldap_auth

    try:
        identity = ldap_auth.authenticate(settings, username, password)
    except ldap_auth.LdapUnavailable as e:
        log.error("LDAP sign-in unavailable: %s", e)
        raise SignInError("the directory (LDAP) cannot be reached; try again later")
    if identity is None:
        return None
    if user is None:
        if name_taken(db, identity.username):
            log.warning("LDAP user %s clashes with a team name; refused", identity.username)
            return None
        user = User(username=identity.username, auth_source="ldap", password_hash=None)
        db.add(user)
    user.email = identity.email or user.email
    user.full_name = identity.full_name or user.full_name
    if settings.ldap_admin_group_dn:
        user.is_admin = identity.is_admin
    db.flush()
    return user
