"""The HTTPS certificate: readable, valid now, not expiring soon, matching its key."""

from __future__ import annotations

import datetime as dt
from typing import Any, List

from .registry import REGISTRY, HealthContext, Outcome, critical, ok, unknown, warning

# days before expiry
EXPIRY_WARNING_DAYS = 30
EXPIRY_CRITICAL_DAYS = 7


def _utc(cert: Any, name: str) -> dt.datetime:
    value = getattr(cert, name + "_utc", None)  # cryptography >= 42
    if value is None:
        value = getattr(cert, name).replace(tzinfo=dt.timezone.utc)
    return value


def _names(cert: Any) -> List[str]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [str(n) for n in ext.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def covers(names: List[str], host: str) -> bool:
    host = host.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


@REGISTRY.register("tls_certificate", "When TLS is on, the certificate is valid and not about "
                   "to expire, and matches the key.", roles=("master",))
def tls_certificate(ctx: HealthContext) -> Outcome:
    s = ctx.settings
    if not s.tls_enable:
        return ok("TLS is off")
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        return unknown("the cryptography package is not installed (pip install cryptography)")
    try:
        with open(s.tls_cert, "rb") as f:
            pem = f.read()
    except OSError as e:
        return critical("certificate %s is not readable: %s" % (s.tls_cert, e.strerror or e))
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]  # the leaf comes first in a chain
    except ValueError as e:
        return critical("certificate %s is not a PEM certificate: %s" % (s.tls_cert, e))
    now = dt.datetime.now(dt.timezone.utc)
    not_after, not_before = _utc(cert, "not_valid_after"), _utc(cert, "not_valid_before")
    days = (not_after - now).total_seconds() / 86400
    names = _names(cert)
    data = {"path": s.tls_cert, "subject": cert.subject.rfc4514_string(), "names": names,
            "not_after": not_after.isoformat(), "days_left": int(days) if days >= 0 else -1}
    problems = []
    try:
        with open(s.tls_key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.DER
        if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
            problems.append("key %s does not belong to the certificate" % s.tls_key)
    except OSError as e:
        problems.append("key %s is not readable: %s" % (s.tls_key, e.strerror or e))
    except (ValueError, TypeError) as e:  # TypeError: the key is encrypted
        problems.append("key %s cannot be loaded: %s" % (s.tls_key, str(e).splitlines()[0]))
    if days < 0:
        problems.insert(0, "certificate expired on %s" % not_after.date())
    elif now < not_before:
        problems.insert(0, "certificate is not valid before %s" % not_before.isoformat())
    if problems:
        return critical("; ".join(problems), **data)
    when = "expires %s (%d days)" % (not_after.date(), int(days))
    if days < EXPIRY_CRITICAL_DAYS:
        return critical("certificate %s; renew it now" % when, **data)
    if days < EXPIRY_WARNING_DAYS:
        return warning("certificate %s; renew it soon" % when, **data)
    if not covers(names, s.domain):
        return warning("certificate (%s) does not name the domain %s; browsers will refuse it"
                       % (", ".join(names) or "no names", s.domain), **data)
    return ok("certificate for %s %s" % (s.domain, when), **data)
