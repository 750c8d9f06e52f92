"""The workbench with Kerberos on, for the Hadoop Authentication page's browser test:
`python -m tests.browser.kerberos_server DATA_DIR PORT KRB5_CONF` serves on loopback with the
given krb5.conf (a test KDC's) and the user alice."""

from __future__ import annotations

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


def main(data_dir: str, port: int, krb5_conf: str) -> None:
    settings = make_settings(Path(data_dir), http_port=port, bind_address="127.0.0.1",
                             engine_port=0, domain="localhost", kerberos_enabled=True,
                             krb5_conf=krb5_conf)
    db = Database(settings.database_url)
    db.upgrade()
    passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)
    with db.session() as s:
        accounts.create_user(s, passwords, settings, "alice", PASSWORD, full_name="Alice",
                             email="alice@example.com")
    app = create_app(settings, db)
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        serve(app, settings, "127.0.0.1", port, log_level="warning")
    finally:  # a test run leaves no engine behind
        orchestrator = manager_for(app.state.server).orchestrator
        for ref in orchestrator.list():
            orchestrator.remove(ref.id)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
