"""What `cdsw health` (check `kerberos`) says about users' tickets on the master."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional, Tuple

from ..settings import Settings


def tickets_summary(settings: Settings, now: Optional[dt.datetime] = None
                    ) -> Tuple[bool, str, Dict[str, Any]]:
    """(all good, one line, data) about the stored credentials' tickets. Reads the database
    only when there is one here (a worker has none): else (True, "", {})."""
    from sqlalchemy import select

    from ..store.db import Database
    from ..store.kerberos_models import KerberosCredential
    from ..store.models import User, utcnow

    db = Database(settings.database_url)
    try:
        path = db.sqlite_path
        if path is not None and not path.exists():
            return True, "", {}
        try:
            with db.session() as s:
                rows = [(u.username, c.principal, c.ticket_expires_at, c.last_error)
                        for c, u in s.execute(select(KerberosCredential, User).join(
                            User, User.id == KerberosCredential.user_id))]
        except Exception:  # no database yet, or not migrated: the database check says so
            return True, "", {}
    finally:
        db.engine.dispose()
    now = now or utcnow()
    failing: List[str] = ["%s (%s): %s" % (user, principal, error)
                          for user, principal, _, error in rows if error]
    expired = [user for user, _, expires, error in rows
               if not error and (expires is None or expires <= now)]
    valid = len(rows) - len(failing) - len(expired)
    text = "%d user ticket(s) valid" % valid
    if expired:
        text += ", %d expired (%s)" % (len(expired), ", ".join(expired))
    if failing:
        text += ", %d failing: %s" % (len(failing), "; ".join(failing))
    good = not (failing or expired)
    service = settings.kerberos_service_principal
    if service and settings.kerberos_service_keytab:
        from . import kdc, tickets

        ticket = kdc.klist(tickets.service_cache(settings), settings.krb5_conf)
        if ticket is None or ticket.expires_at <= now:
            good = False
            text += "; the service principal %s has no valid ticket (keytab %s)" % (
                service, settings.kerberos_service_keytab)
        else:
            text += "; service principal %s valid until %s UTC" % (
                service, ticket.expires_at.replace(microsecond=0))
    return good, text, {"valid": valid, "expired": expired, "failing": failing}
