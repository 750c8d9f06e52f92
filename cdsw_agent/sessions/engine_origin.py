"""Engine content on its own origin, as CDSW's wildcard subdomains did.

A page a session's jupyter_server serves (JupyterLab, a server extension, a file through its
files handler) is code written by whoever can write to the project. It must never run on the
workbench's origin, where the viewer's sign-in cookie and CSRF token live. So browsers reach
engines at another origin, chosen by the `engine_origin` setting:

- ``subdomain``: one host per session, ``s-<id>-<tag>.<domain>``, answered by the same master
  and routed by its Host header (needs wildcard DNS ``*.<domain>``; with TLS a wildcard
  certificate). Every session is its own origin.
- ``port``: a second listener of the master on ``engine_port``, same host name (no DNS needed).
  Engine pages cannot reach the workbench, but sessions share that one origin.

On that origin the only credential is an engine cookie minted here: a signed, short-lived,
session-scoped value, obtained by exchanging a one-time launch token the workbench hands out
(POST /api/v1/sessions/ID/engine-access). The workbench cookie is never accepted there, and the
engine cookie is never accepted by the workbench API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from .launch import base_path
from .secret import master_secret

SUBDOMAIN = "subdomain"
PORT = "port"
LAUNCH_SECONDS = 60  # a launch token is exchanged at once, by a browser redirect
COOKIE_SECONDS = 8 * 3600  # the engine cookie; the workbench sign-in bounds it too
COOKIE_PREFIX = "cdsw_engine_"
LAUNCH_PATH = "/api/v1/sessions/%d/engine-launch"
_ENGINE_PATH = re.compile(r"^/api/v1/sessions/([1-9][0-9]{0,17})/engine(/.*|-launch)$")
_HOST_LABEL = re.compile(r"^s-([1-9][0-9]{0,17})-([0-9a-f]{12})\.")
_NEXT = re.compile(r"^[A-Za-z0-9._~/-]{0,200}$")


@dataclass(frozen=True)
class Where:
    """What a request's origin is: the workbench's (engine=False) or an engine origin; in
    subdomain mode `session_id` is the session the host belongs to."""
    engine: bool
    session_id: Optional[int] = None


WORKBENCH = Where(engine=False)


@dataclass(frozen=True)
class Claims:
    purpose: str  # "launch" or "cookie"
    session_id: int
    user_id: int
    web_session_id: int  # 0: minted for an API key, bound to no browser sign-in
    expires: int
    nonce: str


def _key(data_dir: Any) -> bytes:
    return hmac.new(master_secret(data_dir), b"cdsw-engine-origin", hashlib.sha256).digest()


def host_tag(data_dir: Any, workload_name: str) -> str:
    """The random-looking part of a session's host: derived, so a reused session id never
    gets an old host (and its cookies) back."""
    return hmac.new(_key(data_dir), b"host:" + workload_name.encode(),
                    hashlib.sha256).hexdigest()[:12]


def engine_host(data_dir: Any, domain: str, session_id: int, workload_name: str) -> str:
    return "s-%d-%s.%s" % (session_id, host_tag(data_dir, workload_name), domain)


def engine_origin_url(settings: Any, session_id: int, workload_name: str,
                      request_host: str, request_port: Optional[int]) -> str:
    """scheme://host[:port] where browsers reach this session's engine; `request_host` and
    `request_port` are those the browser used to reach the workbench."""
    scheme = "https" if settings.tls_enable else "http"
    default = 443 if settings.tls_enable else 80
    if settings.engine_origin == SUBDOMAIN:
        host = engine_host(settings.data_dir, settings.domain, session_id, workload_name)
        port = request_port
    else:
        host, port = request_host, settings.engine_port
    if ":" in host:
        host = "[%s]" % host
    return "%s://%s%s" % (scheme, host, "" if port in (None, default) else ":%d" % port)


def classify(scope: Mapping[str, Any], settings: Any) -> Where:
    """Which origin an ASGI request arrived on."""
    if settings.engine_origin == SUBDOMAIN:
        host = split_host(_header(scope, b"host"))[0].lower()
        suffix = "." + settings.domain.lower()
        m = _HOST_LABEL.match(host)
        if m and host.endswith(suffix) and host.count(".") == suffix.count("."):
            return Where(engine=True, session_id=int(m.group(1)))
        return WORKBENCH
    server = scope.get("server") or (None, None)
    if settings.engine_port and settings.engine_port != settings.http_port \
            and server[1] == settings.engine_port:
        return Where(engine=True)
    return WORKBENCH


def engine_path_session(path: str) -> Optional[int]:
    """The session id of an engine path (proxy or launch), else None."""
    m = _ENGINE_PATH.match(path)
    return int(m.group(1)) if m else None


def allowed_on_engine_origin(where: Where, path: str) -> bool:
    """An engine origin answers its sessions' engine paths and nothing else (no workbench API,
    no pages, no static files)."""
    sid = engine_path_session(path)
    return sid is not None and (where.session_id is None or where.session_id == sid)


def _header(scope: Mapping[str, Any], name: bytes) -> str:
    for k, v in scope.get("headers") or ():
        if k == name:
            return v.decode("latin-1")
    return ""


def same_origin(scope: Mapping[str, Any]) -> bool:
    """The request's Origin header names the host it was sent to (a browser's same-origin
    request). Engine origins refuse state-changing requests and WebSockets without it, so a
    page elsewhere, even on a sibling subdomain, cannot use the engine cookie."""
    origin = _header(scope, b"origin")
    host = _header(scope, b"host")
    return bool(origin and host) and origin.split("://", 1)[-1].rstrip("/").lower() == host.lower()


# --- credentials --------------------------------------------------------------------------------

def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _sign(data_dir: Any, body: str, workload_name: str) -> str:
    mac = hmac.new(_key(data_dir), body.encode() + b"|" + workload_name.encode(), hashlib.sha256)
    return _b64(mac.digest())


def mint(data_dir: Any, purpose: str, session_id: int, workload_name: str, user_id: int,
         web_session_id: int, now: Optional[float] = None) -> str:
    ttl = LAUNCH_SECONDS if purpose == "launch" else COOKIE_SECONDS
    expires = int((time.time() if now is None else now) + ttl)
    body = "%s.%d.%d.%d.%d.%s" % (purpose, session_id, user_id, web_session_id, expires,
                                  secrets.token_hex(8))
    return body + "." + _sign(data_dir, body, workload_name)


def verify(data_dir: Any, value: str, purpose: str, session_id: int, workload_name: str,
           now: Optional[float] = None) -> Optional[Claims]:
    """The claims of a valid, unexpired credential for that purpose and session, else None."""
    parts = (value or "").split(".")
    if len(parts) != 7 or parts[0] != purpose:
        return None
    body = ".".join(parts[:6])
    if not hmac.compare_digest(_sign(data_dir, body, workload_name), parts[6]):
        return None
    try:
        claims = Claims(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]),
                        parts[5])
    except ValueError:
        return None
    if claims.session_id != session_id or claims.expires < (time.time() if now is None else now):
        return None
    return claims


class _UsedLaunches:
    """Launch tokens already exchanged (each works once), until they would expire anyway. One
    process keeps them: with several HTTP workers, the controller (server/engine_access.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Dict[str, int] = {}

    def first_use(self, nonce: str, expires: int) -> bool:
        now = int(time.time())
        with self._lock:
            for used in [n for n, exp in self._seen.items() if exp < now]:
                del self._seen[used]
            if nonce in self._seen:
                return False
            self._seen[nonce] = expires
            return True


used_launches = _UsedLaunches()


def cookie_name(session_id: int) -> str:
    return "%s%d" % (COOKIE_PREFIX, session_id)


def cookie_path(session_id: int) -> str:
    return base_path(session_id)


def safe_next(next_path: str) -> Optional[str]:
    """The engine path to open after the launch (relative to the session's base path), or
    None when it is not a plain relative path."""
    nxt = (next_path or "").lstrip("/")
    if not _NEXT.match(nxt) or ".." in nxt.split("/"):
        return None
    return nxt


def launch_url(origin: str, session_id: int, token: str, next_path: str) -> str:
    from urllib.parse import urlencode
    return origin + LAUNCH_PATH % session_id + "?" + urlencode({"token": token, "next": next_path})


def split_host(host_header: str) -> Tuple[str, Optional[int]]:
    """(host, port) of a Host header value (IPv6 in brackets allowed)."""
    host, port = host_header, None
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1:]
        host = host[1:end]
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif host.count(":") == 1:
        host, _, p = host.partition(":")
        port = int(p) if p.isdigit() else None
    return host, port
