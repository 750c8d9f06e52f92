"""Checks against the master: its /healthz answer, its clock, and the database it owns."""

from __future__ import annotations

import email.utils
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .registry import (NETWORK_TIMEOUT, REGISTRY, HealthContext, Outcome, critical, ok,
                       reason, unknown, warning)

# clock skew thresholds, seconds
SKEW_WARNING = 5.0
SKEW_CRITICAL = 30.0


def master_url(settings: Any) -> str:
    scheme = "https" if settings.tls_enable else "http"
    host = settings.master_host
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host  # IPv6 literal
    return "%s://%s:%d" % (scheme, host, settings.http_port)


@dataclass(frozen=True)
class MasterAnswer:
    status_code: int
    body: Dict[str, Any]
    date_header: Optional[str]
    sent: float  # local wall clock when the request left
    received: float  # ... and when the answer came back


def fetch_healthz(ctx: HealthContext) -> MasterAnswer:
    """GET /healthz on the master once per health run (master_api and clock_skew share it)."""

    def get() -> MasterAnswer:
        import requests
        from urllib3.exceptions import InsecureRequestWarning

        sent = time.time()
        with warnings.catch_warnings():
            # the master may be addressed by IP while its certificate names the domain
            warnings.simplefilter("ignore", InsecureRequestWarning)
            r = requests.get(master_url(ctx.settings) + "/healthz", timeout=NETWORK_TIMEOUT,
                             verify=False, allow_redirects=False)
        received = time.time()
        try:
            body = r.json() if r.content else {}
        except ValueError:
            body = {}
        return MasterAnswer(r.status_code, body if isinstance(body, dict) else {},
                            r.headers.get("Date"), sent, received)

    return ctx.cached("master.healthz", get)


@REGISTRY.register("master_api", "The master answers GET /healthz and says it is ready.",
                   roles=("master", "worker"))
def master_api(ctx: HealthContext) -> Outcome:
    url = master_url(ctx.settings) + "/healthz"
    try:
        answer = fetch_healthz(ctx)
    except Exception as e:
        return critical("master at %s does not answer (%s); start the CDSW_MASTER role or check "
                        "master_host" % (url, reason(e)), url=url)
    ms = int((answer.received - answer.sent) * 1000)
    data = {"url": url, "http_status": answer.status_code, "latency_ms": ms,
            "version": answer.body.get("version"), "checks": answer.body.get("checks", {})}
    if answer.status_code == 200:
        return ok("master %s ready in %d ms (version %s)" % (url, ms, data["version"]), **data)
    if answer.status_code == 503:
        failing = ["%s: %s" % (k, v) for k, v in sorted(data["checks"].items()) if v != "ok"]
        return critical("master is up but not ready: %s" % ("; ".join(failing) or "no detail"),
                        **data)
    return critical("master at %s answered HTTP %d; is another service on that port?"
                    % (url, answer.status_code), **data)


@REGISTRY.register("clock_skew", "This host's clock agrees with the master's (HTTP Date header).",
                   roles=("master", "worker"))
def clock_skew(ctx: HealthContext) -> Outcome:
    try:
        answer = fetch_healthz(ctx)
    except Exception as e:
        return unknown("cannot compare clocks: the master does not answer (%s)" % reason(e))
    if not answer.date_header:
        return unknown("the master's answer has no Date header")
    parsed = email.utils.parsedate_to_datetime(answer.date_header)
    if parsed is None or parsed.tzinfo is None:
        return unknown("cannot parse the master's Date header %r" % answer.date_header)
    # Date has whole seconds and is truncated: the master's clock was in [date, date + 1).
    master_time = parsed.timestamp() + 0.5
    local_time = (answer.sent + answer.received) / 2
    skew = local_time - master_time
    uncertainty = 0.5 + (answer.received - answer.sent) / 2
    excess = max(0.0, abs(skew) - uncertainty)
    data = {"skew_seconds": round(skew, 3), "uncertainty_seconds": round(uncertainty, 3)}
    direction = "ahead of" if skew > 0 else "behind"
    text = "clock %.1f s %s the master" % (abs(skew), direction)
    fix = "; sync the clocks with chronyd or ntpd"
    if excess > SKEW_CRITICAL:
        return critical(text + fix, **data)
    if excess > SKEW_WARNING:
        return warning(text + fix, **data)
    return ok(text, **data)


@REGISTRY.register("database", "The database answers, is not damaged (SQLite quick_check) and its "
                   "schema is at the newest migration.",
                   roles=("master",))
def database(ctx: HealthContext) -> Outcome:
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util.exc import CommandError
    from sqlalchemy.engine import make_url

    from ..store.db import MIGRATIONS, Database, DatabaseError

    url = make_url(ctx.settings.database_url)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not Path(url.database).exists():
            # connecting would create an empty file; say what to do instead
            return critical("database file %s does not exist; run `cdsw db upgrade` or start the "
                            "CDSW_MASTER role" % url.database, url=shown)
    elif url.get_backend_name() == "postgresql":
        url = url.update_query_dict({"connect_timeout": str(int(NETWORK_TIMEOUT))})
    db = Database(url.render_as_string(hide_password=False))
    try:
        current = db.current_revision()
        damaged = db.integrity_problem(max_age=0)  # SQLite: PRAGMA quick_check
    except DatabaseError as e:
        return critical(str(e), url=shown)
    finally:
        db.engine.dispose()
    if damaged:
        return critical(damaged, url=shown, revision=current)
    scripts = ScriptDirectory(str(MIGRATIONS))
    head = scripts.get_current_head()
    data = {"url": shown, "revision": current, "head": head}
    if current is None:
        return critical("database %s is empty; run `cdsw db upgrade`" % shown, **data)
    if current == head:
        return ok("at revision %s (newest)" % current, **data)
    try:
        behind = [rev.revision for rev in scripts.iterate_revisions(head, current)
                  if rev.revision != current]
    except (CommandError, RevisionError):
        return critical("database revision %s is unknown to this version (newest known %s): "
                        "the database is newer than the software; upgrade the parcel/package"
                        % (current, head), **data)
    return warning("at revision %s, %d migration(s) behind %s; run `cdsw db upgrade`"
                   % (current, len(behind), head), **data)

