"""MIT Kerberos client tools (Debian's krb5-user: kinit, klist) and what their failures mean.

Every call passes the password on stdin (never on a command line), runs with LC_ALL=C and
TZ=UTC (klist's dates are then parseable) and KRB5_CONFIG pointing at the gateway's krb5.conf.
A failure becomes KerberosError: one line saying what is wrong and what to do, and the HTTP
status the account API answers with (422 wrong credential, 400 unusable keytab, 503 KDC down).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

KINIT_TIMEOUT = 30.0


class KerberosError(Exception):
    """str() is one line for the user; status is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass
class Ticket:
    principal: str
    expires_at: dt.datetime  # naive UTC
    renew_until: Optional[dt.datetime]  # naive UTC; None: not renewable
    starts_at: Optional[dt.datetime] = None


def default_realm(krb5_conf: str) -> str:
    """default_realm of [libdefaults], "" when the file or the entry is missing."""
    try:
        text = Path(krb5_conf).read_text(encoding="utf-8", errors="replace") if krb5_conf else ""
    except OSError:
        return ""
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
        elif section == "libdefaults" and "=" in stripped and not stripped.startswith(("#", ";")):
            key, value = (part.strip() for part in stripped.split("=", 1))
            if key == "default_realm":
                return value
    return ""


PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}(@[A-Za-z0-9._-]{1,200})?$")


def full_principal(principal: str, realm: str) -> str:
    """The principal with its realm; KerberosError (400) when it is not one."""
    principal = principal.strip()
    if not PRINCIPAL_RE.match(principal):
        raise KerberosError("principal %r is not a Kerberos principal: give name or name@REALM"
                            % principal, 400)
    if "@" not in principal:
        if not realm:
            raise KerberosError("krb5.conf names no default_realm: give the principal as "
                                "name@REALM", 400)
        principal += "@" + realm
    return principal


def tools_missing() -> str:
    """What is missing to run kinit/klist, "" when nothing."""
    missing = [t for t in ("kinit", "klist") if shutil.which(t) is None]
    if missing:
        return ("%s not found: install Debian's krb5-user (or your distribution's MIT Kerberos "
                "client tools) on the master" % " and ".join(missing))
    return ""


def tool_env(krb5_conf: str) -> Dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    if krb5_conf:
        env["KRB5_CONFIG"] = krb5_conf
    return env


def explain(output: str, principal: str, keytab: bool = False) -> KerberosError:
    """kinit's error output as one line for the user."""
    text = " ".join(output.split())
    low = text.lower()
    if keytab and ("password incorrect" in low or "preauthentication failed" in low):
        return KerberosError("the keytab's key for %s is not the current one (the KDC refused "
                             "it): export a new keytab" % principal, 400)
    if "not found in kerberos database" in low:
        return KerberosError("principal %s is unknown to the KDC: check the name and the realm"
                             % principal, 422)
    if "password incorrect" in low or "preauthentication failed" in low:
        return KerberosError("the password for %s is wrong (the KDC refused it)" % principal, 422)
    if "cannot contact any kdc" in low or "cannot find kdc" in low or "connection refused" in low:
        return KerberosError("cannot reach the KDC of %s: it is down or krb5.conf names the "
                             "wrong host; try again later or tell your administrator"
                             % principal.split("@")[-1], 503)
    if "keytab contains no suitable keys" in low or "no key table entry" in low:
        return KerberosError("the keytab holds no key for %s: export a keytab for this "
                             "principal (ktutil or kadmin ktadd)" % principal, 400)
    if "unsupported key table format" in low or "bad format" in low or "key table file" in low:
        return KerberosError("the uploaded file is not a keytab: export one with ktutil or "
                             "kadmin ktadd", 400)
    if "clients credentials have been revoked" in low or "expired" in low:
        return KerberosError("the KDC refused %s: the principal is locked or its password "
                             "expired; ask your Kerberos administrator" % principal, 422)
    if "cannot resolve" in low or "realm" in low and "unknown" in low:
        return KerberosError("krb5.conf does not know the realm of %s: check the realm or ask "
                             "your administrator" % principal, 422)
    last = text.split("kinit: ")[-1] if text else "no output"
    return KerberosError("kinit refused %s: %s" % (principal, last[:300]), 422)


def _run(argv: List[str], krb5_conf: str, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
    missing = tools_missing()
    if missing:
        raise KerberosError(missing, 503)
    try:
        return subprocess.run(argv, input=stdin if stdin is not None else b"",
                              capture_output=True, env=tool_env(krb5_conf),
                              timeout=KINIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise KerberosError("the KDC did not answer within %d s: it is down or unreachable; "
                            "try again later" % KINIT_TIMEOUT, 503)


def _lifetimes(lifetime: str, renewable: str) -> List[str]:
    out: List[str] = []
    if lifetime:
        out += ["-l", lifetime]
    if renewable:
        out += ["-r", renewable]
    return out


def kinit_password(principal: str, password: str, cache: Path, krb5_conf: str,
                   lifetime: str = "", renewable: str = "") -> None:
    """A TGT for principal into the cache file, the password on stdin."""
    done = _run(["kinit"] + _lifetimes(lifetime, renewable) + ["-c", "FILE:%s" % cache,
                                                               principal],
                krb5_conf, (password + "\n").encode())
    if done.returncode != 0:
        raise explain((done.stderr + done.stdout).decode("utf-8", "replace"), principal)


def kinit_keytab(principal: str, keytab: Path, cache: Path, krb5_conf: str,
                 lifetime: str = "", renewable: str = "") -> None:
    done = _run(["kinit"] + _lifetimes(lifetime, renewable) +
                ["-k", "-t", "FILE:%s" % keytab, "-c", "FILE:%s" % cache, principal], krb5_conf)
    if done.returncode != 0:
        raise explain((done.stderr + done.stdout).decode("utf-8", "replace"), principal, True)


def kinit_renew(cache: Path, principal: str, krb5_conf: str) -> None:
    done = _run(["kinit", "-R", "-c", "FILE:%s" % cache], krb5_conf)
    if done.returncode != 0:
        raise explain((done.stderr + done.stdout).decode("utf-8", "replace"), principal)


_KLIST_DATE = "%m/%d/%y %H:%M:%S"
_DATE = r"(\d\d/\d\d/\d\d(?:\d\d)? \d\d:\d\d:\d\d)"


def _date(text: str) -> dt.datetime:
    for fmt in (_KLIST_DATE, "%m/%d/%Y %H:%M:%S"):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(text)


def parse_klist(output: str) -> Optional[Ticket]:
    """The TGT in `klist` output (LC_ALL=C, TZ=UTC), None when there is none."""
    principal = ""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Default principal:"):
            principal = line.split(":", 1)[1].strip()
        m = re.match(r"^" + _DATE + r"\s+" + _DATE + r"\s+krbtgt/", line)
        if m:
            renew = None
            if i + 1 < len(lines):
                r = re.search(r"renew until " + _DATE, lines[i + 1])
                if r:
                    renew = _date(r.group(1))
            return Ticket(principal, _date(m.group(2)), renew, _date(m.group(1)))
    return None


def klist(cache: Path, krb5_conf: str) -> Optional[Ticket]:
    """The TGT in the cache file, None when the file holds none (or does not exist)."""
    if not cache.exists():
        return None
    done = _run(["klist", "-c", "FILE:%s" % cache], krb5_conf)
    if done.returncode != 0:
        return None
    return parse_klist(done.stdout.decode("utf-8", "replace"))
