"""Each user's ticket-granting ticket, kept valid by the master.

A user's ticket cache is one file, PROJECTS_DIR/.kerberos/USER_ID/krb5cc (on the storage every
node shares, so engines on workers see it too), in a directory only that user's engines mount,
read-only. The file is always replaced whole (a new cache written next to it, then rename), so
an engine reading it never sees a half-written ticket.

The keeper (a thread of the master, like the session monitor) looks at every stored credential
each kerberos_check_seconds: a ticket with less than a third of its lifetime left (or less than
two rounds) is renewed with `kinit -R`; when it can no longer be renewed (past, or close to, its
renewable lifetime) or is gone, it is obtained again from the stored keytab or password.
Renewals, new tickets and failures are recorded on the credential (the account page shows
them), in `cdsw health` and in the audit log (a failure once, not every round).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Optional

from sqlalchemy import select

from ..loops import Loop
from ..settings import Settings
from ..store.kerberos_models import KerberosCredential
from ..store.models import AuditEvent, User, utcnow
from . import credentials, kdc
from .kdc import KerberosError, Ticket

log = logging.getLogger(__name__)

CACHE_NAME = "krb5cc"
KEEPER_KEY = "kerberos_keeper"


def cache_dir(settings: Settings, user_id: int) -> Path:
    return Path(settings.projects_dir) / ".kerberos" / str(user_id)


def cache_file(settings: Settings, user_id: int) -> Path:
    return cache_dir(settings, user_id) / CACHE_NAME


def ensure_cache_dir(settings: Settings, user_id: int) -> Path:
    """The user's cache directory (0700, given to the engines' uid when this process may)."""
    from ..projects.storage import engine_owner

    d = cache_dir(settings, user_id)
    if not d.is_dir():
        d.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        d.mkdir(mode=0o700, exist_ok=True)
    owner = engine_owner()
    if owner is not None and d.stat().st_uid != owner:
        os.chown(d, owner, owner)
    return d


def _install(settings: Settings, user_id: int, new_cache: Path) -> None:
    """Puts a complete cache file in place of the user's, atomically."""
    from ..projects.storage import engine_owner

    os.chmod(new_cache, 0o600)
    owner = engine_owner()
    if owner is not None:
        os.chown(new_cache, owner, owner)
    os.replace(new_cache, cache_file(settings, user_id))


def _temp_cache(settings: Settings, user_id: int) -> Path:
    return ensure_cache_dir(settings, user_id) / (".%s.%s" % (CACHE_NAME, secrets.token_hex(6)))


def obtain(settings: Settings, user_id: int, principal: str, kind: str, secret: bytes) -> Ticket:
    """A new TGT from the password or keytab, installed as the user's cache. KerberosError
    when the KDC refuses it; nothing is changed then."""
    return _obtain(settings, _temp_cache(settings, user_id),
                   lambda tmp: _install(settings, user_id, tmp), principal, kind, secret)


def _obtain(settings: Settings, tmp: Path, install: Callable[[Path], None], principal: str,
            kind: str, secret: bytes) -> Ticket:
    conf = settings.krb5_conf
    try:
        if kind == "password":
            kdc.kinit_password(principal, secret.decode("utf-8"), tmp, conf,
                               settings.kerberos_ticket_lifetime, settings.kerberos_renew_lifetime)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="cdsw-keytab-"))  # 0700
            try:
                keytab = workdir / "keytab"
                fd = os.open(str(keytab), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(secret)
                kdc.kinit_keytab(principal, keytab, tmp, conf, settings.kerberos_ticket_lifetime,
                                 settings.kerberos_renew_lifetime)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        ticket = kdc.klist(tmp, conf)
        if ticket is None:
            raise KerberosError("kinit left no ticket for %s" % principal, 503)
        install(tmp)
        return ticket
    finally:
        if tmp.exists():
            tmp.unlink()


def renew(settings: Settings, user_id: int, principal: str) -> Ticket:
    """The user's ticket renewed (kinit -R on a copy, then put in place)."""
    tmp = _temp_cache(settings, user_id)
    try:
        shutil.copyfile(cache_file(settings, user_id), tmp)
        kdc.kinit_renew(tmp, principal, settings.krb5_conf)
        ticket = kdc.klist(tmp, settings.krb5_conf)
        if ticket is None:
            raise KerberosError("kinit -R left no ticket for %s" % principal, 503)
        _install(settings, user_id, tmp)
        return ticket
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_cache(settings: Settings, user_id: int) -> None:
    try:
        cache_file(settings, user_id).unlink()
    except FileNotFoundError:
        pass


def margin(ticket: Ticket, interval: float) -> dt.timedelta:
    """How long before its end a ticket is refreshed: a third of its lifetime, at least two
    rounds of the keeper (and 5 s)."""
    lifetime = ticket.expires_at - ticket.starts_at if ticket.starts_at else dt.timedelta(hours=1)
    return max(lifetime / 3, dt.timedelta(seconds=2 * interval + 5))


def action(ticket: Optional[Ticket], principal: str, now: dt.datetime, interval: float) -> str:
    """What the keeper does with a user's ticket: "" (nothing), "renew" or "obtain"."""
    if ticket is None or ticket.principal != principal or ticket.expires_at <= now:
        return "obtain"
    m = margin(ticket, interval)
    if ticket.expires_at - now > m:
        return ""
    if ticket.renew_until is not None and ticket.renew_until - now > m:
        return "renew"
    return "obtain"


def _audit(db: Any, user: Optional[User], action_: str, principal: str, **detail: Any) -> None:
    db.add(AuditEvent(actor_id=None, actor="kerberos", action=action_,
                      target=("user:%s" % user.username) if user else "",
                      detail=dict(principal=principal, **detail), ip=""))


def record(cred: KerberosCredential, ticket: Ticket, now: dt.datetime) -> None:
    cred.ticket_expires_at, cred.renew_until = ticket.expires_at, ticket.renew_until
    cred.last_renewed_at, cred.last_error, cred.last_error_at = now, "", None


def keep(db_factory: Callable[[], Any], settings: Settings, interval: float,
         now: Optional[dt.datetime] = None) -> List[str]:
    """One round over every credential; returns what was done ("alice: renew", ...)."""
    done: List[str] = []
    if not settings.kerberos_enabled:
        return done
    with db_factory() as s:
        user_ids = list(s.scalars(select(KerberosCredential.user_id)))
    for user_id in user_ids:
        when = now or utcnow()
        with db_factory() as s:
            cred = s.get(KerberosCredential, user_id)
            if cred is None:
                continue
            user = s.get(User, user_id)
            what = action(kdc_ticket(settings, user_id), cred.principal, when, interval)
            if not what:
                continue
            try:
                if what == "renew":
                    try:
                        ticket = renew(settings, user_id, cred.principal)
                    except KerberosError as e:
                        log.info("kerberos: renewing %s failed (%s); obtaining a new ticket",
                                 cred.principal, e)
                        what = "obtain"
                if what == "obtain":
                    ticket = obtain(settings, user_id, cred.principal, cred.kind,
                                    credentials.decrypt(settings, cred.secret))
            except (KerberosError, credentials.KeyError_, OSError) as e:
                message = str(e)
                if message != cred.last_error:
                    _audit(s, user, "kerberos.ticket.failed", cred.principal, error=message)
                    log.warning("kerberos: no ticket for %s: %s", cred.principal, message)
                cred.last_error, cred.last_error_at = message, when
                s.commit()
                done.append("%s: failed" % cred.principal)
                continue
            record(cred, ticket, when)
            _audit(s, user, "kerberos.ticket.%s" % ("renewed" if what == "renew" else "obtained"),
                   cred.principal, expires_at=ticket.expires_at.isoformat() + "Z")
            s.commit()
            done.append("%s: %s" % (cred.principal, what))
    return done


def service_cache(settings: Settings) -> Path:
    """The workbench's own ticket (kerberos_service_principal, from its keytab), for the
    master's cluster access: KRB5CCNAME=FILE:<this> in what the master runs against Hadoop."""
    return Path(settings.data_dir) / "kerberos" / "service" / CACHE_NAME


def keep_service(settings: Settings, interval: float,
                 now: Optional[dt.datetime] = None) -> str:
    """Keeps the service principal's ticket like a user's, from its keytab file; "" when no
    service principal is configured or nothing was due, else what was done."""
    principal, keytab = settings.kerberos_service_principal, settings.kerberos_service_keytab
    if not (settings.kerberos_enabled and principal and keytab):
        return ""
    cache = service_cache(settings)
    cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    ticket = kdc.klist(cache, settings.krb5_conf)
    what = action(ticket, principal, now or utcnow(), interval)
    if not what:
        return ""
    tmp = cache.parent / (".%s.%s" % (CACHE_NAME, secrets.token_hex(6)))
    try:
        if what == "renew":
            shutil.copyfile(cache, tmp)
            kdc.kinit_renew(tmp, principal, settings.krb5_conf)
        else:
            kdc.kinit_keytab(principal, Path(keytab), tmp, settings.krb5_conf,
                             settings.kerberos_ticket_lifetime,
                             settings.kerberos_renew_lifetime)
        os.chmod(tmp, 0o600)
        os.replace(tmp, cache)
    except KerberosError as e:
        log.warning("kerberos: no ticket for the service principal %s: %s", principal, e)
        return "%s: failed: %s" % (principal, e)
    finally:
        if tmp.exists():
            tmp.unlink()
    return "%s: %s" % (principal, what)


def kdc_ticket(settings: Settings, user_id: int) -> Optional[Ticket]:
    try:
        return kdc.klist(cache_file(settings, user_id), settings.krb5_conf)
    except KerberosError:
        return None


class Keeper:
    def __init__(self, state: Any, interval: float):
        self.state, self.interval = state, interval
        self._loop = Loop("cdsw-kerberos", self.round, lambda: self.interval, log=log,
                          what="kerberos ticket keeper",
                          failed="kerberos ticket keeper round failed")

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._loop.stop(timeout)

    def round(self) -> None:
        keep_service(self.state.settings, self.interval)
        keep(self.state.db.session, self.state.settings, self.interval)


def start(state: Any) -> Optional[Keeper]:
    """Starts the keeper of this master (once) when Kerberos is enabled."""
    if not state.settings.kerberos_enabled:
        return None
    keeper = state.extras.get(KEEPER_KEY)
    if keeper is None:
        keeper = state.extras[KEEPER_KEY] = Keeper(state,
                                                   float(state.settings.kerberos_check_seconds))
    keeper.start()
    return keeper


def stop(state: Any) -> None:
    keeper = state.extras.pop(KEEPER_KEY, None)
    if keeper is not None:
        keeper.stop()
