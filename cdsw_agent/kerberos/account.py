"""A user's Kerberos credential: saved only once the KDC accepted it, removed with its ticket,
and its status as the account page and the API show it (never the secret itself)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, Optional

from sqlalchemy.orm import Session

from ..settings import Settings
from ..store.kerberos_models import KerberosCredential
from ..store.models import User, utcnow
from . import credentials, kdc, tickets
from .kdc import KerberosError

MAX_KEYTAB_BYTES = 64 * 1024
OFF = ("Kerberos is off on this workbench: a site administrator enables it with the setting "
       "kerberos_enabled")


def realm(settings: Settings) -> str:
    return kdc.default_realm(settings.krb5_conf)


def save(db: Session, settings: Settings, user: User, principal: str,
         password: Optional[str] = None, keytab: Optional[bytes] = None) -> KerberosCredential:
    """Checks the credential against the KDC (a ticket is obtained with it), then stores it
    encrypted and installs the ticket. KerberosError, with nothing stored or changed, when the
    KDC refuses it or cannot be reached."""
    if not settings.kerberos_enabled:
        raise KerberosError(OFF, 409)
    if (password is None) == (keytab is None):
        raise KerberosError("give either a password or a keytab file", 400)
    if password is not None and not password:
        raise KerberosError("the password is empty", 400)
    if keytab is not None and not keytab:
        raise KerberosError("the keytab file is empty", 400)
    if keytab is not None and len(keytab) > MAX_KEYTAB_BYTES:
        raise KerberosError("the keytab is larger than %d KiB: export the keys of one principal"
                            % (MAX_KEYTAB_BYTES // 1024), 400)
    if keytab is not None and keytab[:1] != b"\x05":
        raise KerberosError("the uploaded file is not a keytab: export one with ktutil or "
                            "kadmin ktadd", 400)
    name = kdc.full_principal(principal, realm(settings))
    kind = "password" if password is not None else "keytab"
    secret = password.encode("utf-8") if password is not None else bytes(keytab or b"")
    ticket = tickets.obtain(settings, user.id, name, kind, secret)  # raises before storing
    cred = db.get(KerberosCredential, user.id)
    if cred is None:
        cred = KerberosCredential(user_id=user.id)
        db.add(cred)
    cred.principal, cred.kind = name, kind
    cred.secret = credentials.encrypt(settings, secret)
    cred.created_at = utcnow()
    tickets.record(cred, ticket, utcnow())
    return cred


def remove(db: Session, settings: Settings, user: User) -> Optional[str]:
    """Forgets the credential and deletes the ticket; the principal it had, None if none."""
    cred = db.get(KerberosCredential, user.id)
    tickets.remove_cache(settings, user.id)
    if cred is None:
        return None
    db.delete(cred)
    return cred.principal


def _iso(when: Optional[dt.datetime]) -> Optional[str]:
    return when.replace(microsecond=0).isoformat() + "Z" if when else None


def status(db: Session, settings: Settings, user: User,
           now: Optional[dt.datetime] = None) -> Dict[str, Any]:
    now = now or utcnow()
    cred = db.get(KerberosCredential, user.id)
    out: Dict[str, Any] = {"enabled": bool(settings.kerberos_enabled), "realm": realm(settings),
                           "principal": None, "kind": None, "state": "none",
                           "ticket_expires_at": None, "renew_until": None,
                           "last_renewed_at": None, "last_error": "", "last_error_at": None}
    if cred is None:
        return out
    expired = cred.ticket_expires_at is None or cred.ticket_expires_at <= now
    out.update(principal=cred.principal, kind=cred.kind,
               state="failing" if cred.last_error else ("expired" if expired else "valid"),
               ticket_expires_at=_iso(cred.ticket_expires_at), renew_until=_iso(cred.renew_until),
               last_renewed_at=_iso(cred.last_renewed_at), last_error=cred.last_error or "",
               last_error_at=_iso(cred.last_error_at))
    return out
