"""Rendering a page: the jinja2 environment (autoescaped, StrictUndefined) and what every page
shows around its content (who is signed in, the CSRF token, navigation, the site banner)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional, Tuple

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from .. import __version__
from ..server.errors import ApiError
from ..server.permissions import Access, decide
from ..server.routes.site_settings import effective
from . import assets

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("cdsw_agent.web", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# Content-Security-Policy of every page: scripts and styles from this server only, so even a
# markup injection cannot run code; our JS reads page data from data-* attributes.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
# The workbench page only: xterm.js sizes its grid with <style> elements it creates at run time,
# and rich outputs (pandas tables) carry inline styles inside their sandboxed srcdoc frames, which
# inherit this policy. Scripts stay 'self' only, so injected markup still cannot run code.
CSP_INLINE_STYLES = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def _when(value: Optional[dt.datetime]) -> str:
    if value is None:
        return "—"
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (size, unit)
        size /= 1024
    return "%d B" % n


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    return "%dm %02ds" % divmod(s, 60) if s >= 60 else "%ds" % s


def _mtime(timestamp: float) -> str:
    return _when(dt.datetime.fromtimestamp(timestamp, dt.timezone.utc))


def _metric(value: Any) -> str:
    """A tracked metric for a table cell: floats to 6 significant digits (0.1 + 0.2 shows as
    0.3), everything else as tracked; the exact value stays in the API."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return "%.6g" % value
    return str(value)


def _number(x: float) -> str:
    return "%g" % x


def profile_label(p: Any) -> str:
    """A profile for a menu: its resources once. A name that only restates them (the built-in
    "1 vCPU / 2 GiB") is not repeated beside them."""
    resources = "%s vCPU / %s GiB" % (_number(p.cpu), _number(p.memory_gb))
    if p.gpus:
        resources += " / %d GPU" % p.gpus
    name = p.name.strip()
    return resources if name.replace(" ", "").lower() == resources.replace(" ", "").lower() \
        else "%s — %s" % (name, resources)


def image_label(i: Any) -> str:
    """An engine image for a menu: its description (or reference) and the kernels it holds."""
    ref = "%s:%s" % (i.repository, i.tag)
    label = i.description or ref
    return "%s (%s)" % (label, ", ".join(i.kernels)) if i.kernels else label


_env.filters.update(when=_when, size=_size, duration=_duration, mtime=_mtime, metric=_metric,
                    profile=profile_label, image=image_label)


def can(request: Request, access: Access, db: Session, action: str) -> bool:
    """Whether the caller may do `action` here, decided by the one set of rules in
    server/permissions.py (pages use it to show or hide controls, never to grant)."""
    try:
        decide(action, access.caller, request, db)
        return True
    except ApiError:
        return False


def project_nav(project_id: int, allowed: Dict[str, bool]) -> List[Tuple[str, str, str]]:
    """(key, label, href) of a project's sections."""
    base = "/projects/%d" % project_id
    items = [("overview", "Overview", base), ("files", "Files", base + "/files"),
             ("sessions", "Workbench", base + "/sessions"), ("jobs", "Jobs", base + "/jobs"),
             ("pipeline", "Pipeline", base + "/pipeline"),
             ("experiments", "Experiments", base + "/experiments"),
             ("models", "Models", base + "/models"),
             ("promotions", "Promotions", base + "/promotions")]
    if allowed.get("settings"):
        items.append(("settings", "Settings", base + "/settings"))
    return items


def page(request: Request, template: str, *, title: str, access: Optional[Access] = None,
         db: Optional[Session] = None, section: str = "", status_code: int = 200,
         csp: str = CSP, **context: Any) -> HTMLResponse:
    user = access.caller.user if access is not None else None
    ws = access.caller.web_session if access is not None else None
    announcement = ""
    if db is not None and user is not None:
        announcement = str(effective(db, request.app.state.server.settings, "announcement") or "")
    html = _env.get_template(template).render(
        request=request, title=title, user=user, csrf_token=ws.csrf_token if ws else "",
        section=section, announcement=announcement, version=__version__,
        missing_assets=assets.missing_vendor_files(), install_hint=assets.INSTALL_HINT,
        **context)
    return HTMLResponse(html, status_code=status_code,
                        headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})
