"""Where an authenticated API call's time goes: GET /api/v1/projects?limit=100 over N projects
taken apart, in one process and one thread, on SQLite (or --db-url), in CPU milliseconds per
call (time.process_time, so other processes' load inflates the figures less than wall time).

Each line adds one step to the previous one: a session opened and closed, the caller looked up
by API key, the permission decided, the list's rows read (1, then 100), the answer serialised
(the route's whole work). Then the whole ASGI application called directly (no HTTP, no
sockets): FastAPI, the middlewares, dependency injection and the thread-pool hops included.
Measures, never asserts.

    .venv/bin/python benchmarks/api_call_cost.py [--projects 1000] [--calls 300] [--db-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starlette.requests import Request  # noqa: E402

from cdsw_agent.security import tokens  # noqa: E402
from cdsw_agent.server import auth, permissions  # noqa: E402
from cdsw_agent.server.app import create_app  # noqa: E402
from cdsw_agent.server.routes import projects as project_routes  # noqa: E402
from cdsw_agent.settings import load_settings  # noqa: E402
from cdsw_agent.store.db import Database  # noqa: E402
from cdsw_agent.store.models import ApiKey, Project, User, utcnow  # noqa: E402


def cpu_ms(fn: Callable[[], Any], calls: int) -> float:
    """Median over 5 batches of CPU milliseconds per call, after a warm-up."""
    for _ in range(20):
        fn()
    batches = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            fn()
        batches.append((time.process_time() - started) / calls * 1000)
    return statistics.median(batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=300, help="calls per batch")
    ap.add_argument("--db-url", default="")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cdsw-bench-"))
    settings = load_settings(conf_path=None, properties_path=None, environ={}, overrides={
        "data_dir": str(tmp / "data"), "orchestrator": "local",
        **({"db_url": args.db_url} if args.db_url else {})})
    db = Database(args.db_url or settings.database_url)
    db.upgrade()
    key = tokens.new_token(tokens.API_KEY_PREFIX)
    with db.session() as s:
        user = User(username="bench", password_hash="-", is_admin=True, email="bench@example.com",
                    full_name="Bench")
        s.add(user)
        s.flush()
        s.add(ApiKey(user_id=user.id, name="bench", prefix=key[:12], key_hash=tokens.digest(key),
                     scope="write", expires_at=utcnow() + dt.timedelta(days=1)))
        for i in range(args.projects):
            s.add(Project(name="project %d" % i, slug="project-%d" % i, owner_user_id=user.id,
                          namespace="bench", visibility="private"))
    scope: Dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/api/v1/projects", "raw_path": b"/api/v1/projects",
        "query_string": b"limit=100", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80), "path_params": {},
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer " + key.encode())]}

    def steps(upto: str, limit: int = 100) -> Callable[[], None]:
        def run() -> None:
            s = db.sessionmaker()
            try:
                if upto == "session":
                    return
                caller = auth.current_caller(Request(scope), s)
                if upto == "caller":
                    return
                access = permissions.decide("signed_in", caller, Request(scope), s)
                if upto == "decide":
                    return
                if upto == "rows":
                    project_routes.project_rows(access, s, limit=limit)
                    return
                project_routes.list_projects(q="", owner="", visibility="", limit=limit,
                                             offset=0, access=access, db=s)
            finally:
                s.rollback()
                s.close()
        return run

    lines = [("a session opened and closed", steps("session")),
             ("+ the caller by API key (current_caller)", steps("caller")),
             ("+ the permission (decide 'signed_in')", steps("decide")),
             ("+ the list's rows, limit=1 (project_rows)", steps("rows", 1)),
             ("+ the list's rows, limit=100", steps("rows")),
             ("+ the answer serialised: the route's whole work", steps("route"))]
    results = [(label, cpu_ms(fn, args.calls)) for label, fn in lines]

    app = create_app(settings, db)

    async def call() -> None:
        sent = []

        async def receive() -> Dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Dict[str, Any]) -> None:
            sent.append(message)

        await app(dict(scope, state={}), receive, send)
        assert sent[0]["status"] == 200, sent[:1]

    loop = asyncio.new_event_loop()
    results.append(("the whole application, called in process (ASGI)",
                    cpu_ms(lambda: loop.run_until_complete(call()), args.calls)))
    loop.close()

    print("API call cost: GET /api/v1/projects?limit=100 over %d projects, %s, CPU ms per call "
          "(median of 5 batches of %d); %s, %d cores, Python %s; load average %s" % (
              args.projects, "PostgreSQL" if args.db_url else "SQLite", args.calls,
              platform.machine(), os.cpu_count(), platform.python_version(),
              "%.2f %.2f %.2f" % os.getloadavg()))
    print()
    print("| step | CPU ms per call |")
    print("|---|---:|")
    for label, ms in results:
        print("| %s | %.2f |" % (label, ms))
    db.engine.dispose()


if __name__ == "__main__":
    main()
