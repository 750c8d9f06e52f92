"""The workbench as the browser tests see it: a real uvicorn serving the app on loopback, in its
own process, with the local orchestrator for jobs, sessions, experiments and models (engines
are processes). Run as
`python -m tests.browser.server DATA_DIR PORT ENGINE_PORT [port|subdomain [SETTINGS_JSON]]`
(engine content on the engine port, or on a host per session under localhost; more settings as
JSON); it creates the test users, then serves, and removes every engine it started when it stops."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from cdsw_agent import accounts
from cdsw_agent.security.passwords import Passwords
from cdsw_agent.server.app import create_app
from cdsw_agent.server.listen import serve
from cdsw_agent.sessions.monitor import manager_for
from cdsw_agent.store.db import Database

from ..conftest import PASSWORD, make_settings

USERS = (("admin", True), ("alice", False))  # a site administrator and a data scientist


def main(data_dir: str, port: int, engine_port: int, engine_origin: str = "port",
         more_settings: str = "{}") -> None:
    settings = make_settings(Path(data_dir), http_port=port, bind_address="127.0.0.1",
                             engine_port=engine_port, engine_origin=engine_origin,
                             domain="localhost", **json.loads(more_settings))
    db = Database(settings.database_url)
    db.upgrade()
    passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)
    with db.session() as s:
        for name, admin in USERS:
            accounts.create_user(s, passwords, settings, name, PASSWORD, is_admin=admin,
                                 full_name=name.title(), email=name + "@example.com")
    app = create_app(settings, db)
    # uvicorn re-raises the SIGTERM that stopped it; a no-op handler lets the cleanup run
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        serve(app, settings, "127.0.0.1", port, log_level="warning")  # and the engine port
    finally:
        # the master leaves engines running for the next master to adopt; a test run must not
        orchestrator = manager_for(app.state.server).orchestrator
        for ref in orchestrator.list():
            orchestrator.remove(ref.id)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6])
