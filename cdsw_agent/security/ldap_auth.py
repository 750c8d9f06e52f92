"""Sign-in against an LDAP directory (OpenLDAP, FreeIPA, Active Directory).

The usual search-then-bind flow: bind as the service account (or anonymously), find the
user's entry with ldap_user_filter, then bind as that DN with the password the user typed.
Admin rights come from membership of ldap_admin_group_dn, evaluated by the server so DN
normalisation follows its matching rules.

Two outcomes the caller must tell apart:
- authenticate() returns None: these credentials do not sign in (unknown user, wrong or
  empty password, ambiguous filter). Show "invalid username or password".
- LdapUnavailable: the directory cannot be used (down, TLS, service account, settings).
  Its message is one line naming what to fix and never contains a password.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

from ldap3 import ANONYMOUS, BASE, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds to open the TCP (and TLS) connection
RECEIVE_TIMEOUT = 10  # seconds to wait for any one response
_MAX_USERNAME = 256
_MAX_DETAIL = 200

# LDAP result codes (RFC 4511) handled explicitly
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_INVALID_CREDENTIALS = 49

# "(uid={username})" -> "uid": the attribute whose value becomes the workbench username
_LOGIN_ATTR = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9-]*)\s*=\s*\{username\}\s*\)")


@dataclass
class LdapIdentity:
    username: str  # the directory's login attribute (e.g. uid), stripped and lower-cased
    dn: str
    email: Optional[str]
    full_name: Optional[str]
    is_admin: bool


class LdapUnavailable(Exception):
    """The directory cannot be used; str(e) says what to fix (no secrets)."""


def ldap_enabled(settings: Any) -> bool:
    return bool(settings.ldap_url)


def authenticate(settings: Any, username: str, password: str) -> Optional[LdapIdentity]:
    """The user's identity if the directory accepts username/password, else None.

    Raises LdapUnavailable when the directory cannot answer (down, TLS, service account,
    bad settings); that is not a wrong password and should not count as one.
    """
    username = (username or "").strip()
    # An empty password is an "unauthenticated bind" (RFC 4513 5.1.2) that many servers
    # accept as success: refuse it before talking to the directory.
    if not username or not password or len(username) > _MAX_USERNAME or "\x00" in username:
        return None
    secrets = [settings.ldap_bind_password, password]
    user_filter = _user_filter(settings.ldap_user_filter, username)
    login_attr = _login_attribute(settings.ldap_user_filter)
    email_attr, name_attr = settings.ldap_email_attribute, settings.ldap_fullname_attribute

    with _service_connection(settings, secrets) as conn:
        attrs = sorted({a for a in (login_attr, email_attr, name_attr) if a})
        entries = _search(conn, settings, settings.ldap_user_search_base, user_filter, SUBTREE,
                          attrs, size_limit=2, what="user search", secrets=secrets)
        if len(entries) != 1:
            if len(entries) > 1:
                log.warning("LDAP: ldap_user_filter matches more than one entry for %r; refusing", username)
            return None
        dn, values = entries[0]

        if not _user_bind(settings, dn, password, secrets):
            return None

        login_value = _login_value(values, login_attr, username) if login_attr else None
        is_admin = False
        if settings.ldap_admin_group_dn:
            is_admin = _is_member(conn, settings, dn, login_value or username, secrets)

    return LdapIdentity(
        username=(login_value or username).strip().lower(),
        dn=dn,
        email=_first(values, email_attr) if email_attr else None,
        full_name=_first(values, name_attr) if name_attr else None,
        is_admin=is_admin,
    )


def check_connection(settings: Any) -> str:
    """Connect, bind as the service account and read the search base; a one-line summary.

    Raises LdapUnavailable with what to fix.
    """
    secrets = [settings.ldap_bind_password]
    with _service_connection(settings, secrets) as conn:
        base = settings.ldap_user_search_base
        _search(conn, settings, base, "(objectClass=*)", BASE, [], size_limit=1,
                what="reading ldap_user_search_base", secrets=secrets, missing_is_error=True)
        if settings.ldap_admin_group_dn:
            found = _search(conn, settings, settings.ldap_admin_group_dn, "(objectClass=*)", BASE, [],
                            size_limit=1, what="reading ldap_admin_group_dn", secrets=secrets)
            if not found:
                raise LdapUnavailable("ldap_admin_group_dn %s was not found or is not readable by %s"
                                      % (settings.ldap_admin_group_dn, _who(settings)))
        tls = _tls_mode(settings)
        return "%s: bound as %s, %s, search base %s readable" % (
            settings.ldap_url, _who(settings), tls, base)


# --- connection --------------------------------------------------------------------------

def _parse_url(url: str) -> Tuple[str, int, bool]:
    if not url:
        raise LdapUnavailable("LDAP sign-in is off: ldap_url is empty")
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise LdapUnavailable("ldap_url %r is not a valid URL (%s)" % (url, e))
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps") or not host:
        raise LdapUnavailable("ldap_url %r: expected ldap://HOST[:PORT] or ldaps://HOST[:PORT]" % url)
    use_ssl = scheme == "ldaps"
    return host, port or (636 if use_ssl else 389), use_ssl


def _tls_mode(settings: Any) -> str:
    ldaps = settings.ldap_url.strip().lower().startswith("ldaps://")
    if not (ldaps or settings.ldap_starttls):
        return "no TLS"
    how = "ldaps" if ldaps else "StartTLS"
    return "%s, certificate %s" % (how, "verified" if settings.ldap_tls_verify else "NOT verified")


def _server(settings: Any) -> Server:
    host, port, use_ssl = _parse_url(settings.ldap_url)
    tls: Optional[Tls] = None
    if use_ssl or settings.ldap_starttls:
        ca = settings.ldap_ca_cert or None
        if ca and not os.path.isfile(ca):
            raise LdapUnavailable("ldap_ca_cert %s does not exist or is not a file" % ca)
        try:
            # With no ldap_ca_cert the system trust store is used. Host names are checked
            # by ldap3 after the handshake whenever validation is on.
            tls = Tls(validate=ssl.CERT_REQUIRED if settings.ldap_tls_verify else ssl.CERT_NONE,
                      ca_certs_file=ca)
        except ldap_exc.LDAPException as e:
            raise LdapUnavailable("ldap_ca_cert %s cannot be used: %s" % (ca, _detail(e, [])))
    return Server(host, port=port, use_ssl=use_ssl, tls=tls, get_info=NONE,
                  connect_timeout=CONNECT_TIMEOUT)


def _connection(server: Server, user: Optional[str], password: Optional[str]) -> Connection:
    return Connection(server, user=user, password=password,
                      authentication=SIMPLE if user else ANONYMOUS,
                      receive_timeout=RECEIVE_TIMEOUT, read_only=True, raise_exceptions=False,
                      auto_referrals=False)


def _open(conn: Connection, settings: Any, secrets: List[Optional[str]]) -> None:
    """Open the socket and, for ldap:// with ldap_starttls, upgrade it; LdapUnavailable on failure."""
    try:
        conn.open()
        if settings.ldap_starttls and not conn.server.ssl:
            if not conn.start_tls():
                raise LdapUnavailable("StartTLS refused by %s (%s): check the server supports it or use "
                                      "ldaps://" % (settings.ldap_url, _result(conn)))
    except LdapUnavailable:
        raise
    except (ldap_exc.LDAPException, OSError, ValueError) as e:
        raise _unreachable(settings, e, secrets)


@contextmanager
def _service_connection(settings: Any, secrets: List[Optional[str]]) -> Iterator[Connection]:
    conn = _connection(_server(settings), settings.ldap_bind_dn or None, settings.ldap_bind_password or None)
    try:
        _open(conn, settings, secrets)
        try:
            ok = conn.bind()
        except ldap_exc.LDAPPasswordIsMandatoryError:
            raise LdapUnavailable("ldap_bind_dn is set but ldap_bind_password is empty")
        except (ldap_exc.LDAPException, OSError) as e:
            raise _unreachable(settings, e, secrets)
        if not ok:
            raise LdapUnavailable("LDAP service account bind as %s failed (%s): check ldap_bind_dn and "
                                  "ldap_bind_password" % (_who(settings), _result(conn)))
        yield conn
    finally:
        _close(conn)


def _user_bind(settings: Any, dn: str, password: str, secrets: List[Optional[str]]) -> bool:
    """Whether `dn` accepts `password`, on a connection of its own (the service one keeps its rights)."""
    conn = _connection(_server(settings), dn, password)
    try:
        _open(conn, settings, secrets)
        try:
            ok = conn.bind()
        except (ldap_exc.LDAPPasswordIsMandatoryError, ldap_exc.LDAPSASLPrepError):
            return False  # empty, or characters SASLprep forbids: cannot be a valid password
        except (ldap_exc.LDAPException, OSError) as e:
            raise _unreachable(settings, e, secrets)
        if not ok:
            code = conn.result.get("result") if conn.result else None
            if code != _INVALID_CREDENTIALS:  # e.g. locked or expired accounts; still a refusal
                log.info("LDAP: bind as %s refused: %s", dn, _result(conn))
        return bool(ok)
    finally:
        _close(conn)


def _close(conn: Connection) -> None:
    try:
        if not conn.closed:
            conn.unbind()
    except (ldap_exc.LDAPException, OSError):
        pass


# --- searching ---------------------------------------------------------------------------

def _user_filter(template: str, username: str) -> str:
    if "{username}" not in template:
        raise LdapUnavailable("ldap_user_filter %r must contain {username}" % template)
    flt = template.strip().replace("{username}", escape_filter_chars(username))
    return flt if flt.startswith("(") else "(" + flt + ")"


def _login_attribute(template: str) -> Optional[str]:
    m = _LOGIN_ATTR.search(template)
    return m.group(1) if m else None


def _search(conn: Connection, settings: Any, base: str, flt: str, scope: str, attributes: List[str],
            size_limit: int, what: str, secrets: List[Optional[str]],
            missing_is_error: bool = False) -> List[Tuple[str, Dict[str, Any]]]:
    """(dn, attributes) of the entries found; a missing base is [] unless missing_is_error."""
    if not base:
        raise LdapUnavailable("%s: the base DN is empty; set it in the LDAP settings" % what)
    try:
        conn.search(base, flt, search_scope=scope, attributes=attributes or ["1.1"],
                    size_limit=size_limit, time_limit=RECEIVE_TIMEOUT)
    except ldap_exc.LDAPInvalidFilterError as e:
        raise LdapUnavailable("ldap_user_filter %r is not a valid LDAP filter: %s"
                              % (settings.ldap_user_filter, _detail(e, secrets)))
    except (ldap_exc.LDAPException, OSError) as e:
        raise _unreachable(settings, e, secrets)
    code = conn.result.get("result") if conn.result else None
    if code == _NO_SUCH_OBJECT:
        if missing_is_error or scope == SUBTREE:
            raise LdapUnavailable("%s: %s does not exist on %s" % (what, base, settings.ldap_url))
        return []
    if code not in (0, _SIZE_LIMIT_EXCEEDED):
        raise LdapUnavailable("%s under %s failed (%s): check the DN and that %s may read it"
                              % (what, base, _result(conn), _who(settings)))
    return [(r["dn"], r.get("attributes") or {}) for r in (conn.response or [])
            if r.get("type") == "searchResEntry"]


def _is_member(conn: Connection, settings: Any, user_dn: str, login: str,
               secrets: List[Optional[str]]) -> bool:
    """Whether the admin group lists the user (member / uniqueMember by DN, memberUid by login).

    Evaluated by the server with a base search, so DN spelling differences do not matter
    and attributes unknown to its schema simply do not match.
    """
    dn, uid = escape_filter_chars(user_dn), escape_filter_chars(login)
    flt = "(|(member=%s)(uniqueMember=%s)(memberUid=%s))" % (dn, dn, uid)
    found = _search(conn, settings, settings.ldap_admin_group_dn, flt, BASE, [], size_limit=1,
                    what="admin group lookup", secrets=secrets)
    return bool(found)


def _login_value(values: Dict[str, Any], name: str, typed: str) -> Optional[str]:
    """The login attribute's value the user typed (uid may be multi-valued), else its first."""
    raw = values.get(name)
    for v in raw if isinstance(raw, (list, tuple)) else [raw]:
        if isinstance(v, str) and v.strip().lower() == typed.lower():
            return v.strip()
    return _first(values, name)


def _first(values: Dict[str, Any], name: str) -> Optional[str]:
    """First non-empty value of an attribute, as text (ldap3 gives lists without schema)."""
    value = values.get(name)
    if isinstance(value, (list, tuple)):
        value = next((v for v in value if v not in (None, "", b"")), None)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip() if value is not None else ""
    return text or None


# --- messages ----------------------------------------------------------------------------

def _who(settings: Any) -> str:
    return settings.ldap_bind_dn or "anonymous"


def _result(conn: Connection) -> str:
    r = conn.result or {}
    text = r.get("description") or "unknown error"
    if r.get("message"):
        text += ": " + str(r["message"])
    return _one_line(text)


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL - 3] + "..."


def _detail(e: BaseException, secrets: List[Optional[str]]) -> str:
    text = str(e) or type(e).__name__
    for s in secrets:
        if s:
            text = text.replace(s, "****")
    return _one_line(text)


def _unreachable(settings: Any, e: BaseException, secrets: List[Optional[str]]) -> LdapUnavailable:
    """Turn a connection-level failure into a message naming the setting to fix."""
    url = settings.ldap_url
    text = str(e)
    low = text.lower()
    if "timed out" in low or "timeout" in low:
        return LdapUnavailable("LDAP server %s did not answer in time (%ds): check ldap_url, the network "
                               "and that the server is healthy" % (url, max(CONNECT_TIMEOUT, RECEIVE_TIMEOUT)))
    if isinstance(e, ldap_exc.LDAPCertificateError) or "doesn't match" in low or "hostname mismatch" in low:
        return LdapUnavailable("LDAP server certificate of %s does not match its host name: use the "
                               "name the certificate was issued for in ldap_url" % url)
    if "certificate" in low or "certificate_verify_failed" in low:
        hint = ("check that ldap_ca_cert %s signed it" % settings.ldap_ca_cert if settings.ldap_ca_cert
                else "set ldap_ca_cert to the CA that signed it")
        return LdapUnavailable("LDAP server certificate of %s could not be verified: %s"
                               % (url, hint))
    if isinstance(e, ldap_exc.LDAPStartTLSError):
        return LdapUnavailable("StartTLS with %s failed (%s): check the server supports it or use ldaps://"
                               % (url, _detail(e, secrets)))
    if "ssl" in low or "tls" in low or isinstance(e, ssl.SSLError):
        return LdapUnavailable("TLS with %s failed (%s): check ldap_url's scheme and the server's TLS setup"
                               % (url, _detail(e, secrets)))
    return LdapUnavailable("cannot reach LDAP server %s (%s): check ldap_url and that the server is running"
                           % (url, _detail(e, secrets)))
