"""What an engine gets for Kerberos: the ticket cache directory of the person it acts for,
read-only, as KRB5CCNAME, and krb5.conf; or, when that person stored no credential, a notice
the engine prints when it starts (job log, session console) instead of a Java stack trace.

The directory is mounted even when it is still empty: a ticket stored later reaches a running
engine, and each renewal (a new file renamed into place) is seen at once.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy.orm import Session

from ..clientconfig import KRB5_TARGET
from ..orchestrators import Mount, WorkloadSpec
from ..settings import Settings
from ..store.kerberos_models import KerberosCredential
from ..store.models import User
from . import tickets

# in the engine, read-only; under /run, not /var/run, which is a symbolic link in Debian images:
# a warm engine's claim mounts onto no path that crosses a link (orchestrators/mount_inject.py)
CACHE_MOUNT = "/run/cdsw/krb5"
NOTICE_VARIABLE = "CDSW_KERBEROS_NOTICE"
# prints the notice first, then runs the engine's own command unchanged
NOTICE_WRAPPER = ['/bin/sh', '-c', 'printf "%s\\n" "$CDSW_KERBEROS_NOTICE" >&2; exec "$@"',
                  "cdsw-kerberos"]


def notice(user: User) -> str:
    return ("Kerberos: %s has no Kerberos credential, so this engine has no ticket and Hadoop "
            "refuses it; add your principal with a password or keytab under Account > Hadoop "
            "Authentication, then start it again" % user.username)


def attach(db: Session, settings: Settings, spec: WorkloadSpec, user: Optional[User],
           local: bool) -> None:
    """Adds the acting user's Kerberos ticket (or the notice) to the engine; nothing when
    Kerberos is off or the engine acts for nobody."""
    if not settings.kerberos_enabled or user is None:
        return
    host_dir = tickets.ensure_cache_dir(settings, user.id)
    if local:  # plain processes: no mounts, the host's paths
        spec.env["KRB5CCNAME"] = "FILE:%s" % (host_dir / tickets.CACHE_NAME)
        if settings.krb5_conf:
            spec.env["KRB5_CONFIG"] = settings.krb5_conf
    else:
        spec.mounts.append(Mount(str(host_dir), CACHE_MOUNT, True))
        spec.env["KRB5CCNAME"] = "FILE:%s/%s" % (CACHE_MOUNT, tickets.CACHE_NAME)
        if settings.krb5_conf and not any(m.target == KRB5_TARGET for m in spec.mounts):
            spec.mounts.append(Mount(settings.krb5_conf, KRB5_TARGET, True))
            spec.env["KRB5_CONFIG"] = KRB5_TARGET
    if db.get(KerberosCredential, user.id) is None:
        spec.env[NOTICE_VARIABLE] = notice(user)
        spec.command = NOTICE_WRAPPER + list(spec.command)
