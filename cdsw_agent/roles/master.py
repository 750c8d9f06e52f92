"""CDSW_MASTER: upgrades the database (after a backup) and serves the web app and API.

With the swarm orchestrator it also keeps this host's engine firewall narrowed to the CDSW nodes
(start_engine_firewall: the swarm's nodes, the list workers get from /cluster/engine-nodes).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import requests

from .. import storage  # project storage: SFTP for workers' sshfs mounts (or NFS)
from ..errors import UserError
from ..logs import setup_logging
from ..netutil import port_free
from ..server.listen import engine_listener_port
from ..settings import Settings
from ..store import lock
from ..store.db import Database

log = logging.getLogger(__name__)
# how long a stopping master waits for open requests (and idle TLS clients) before closing them
GRACEFUL_SHUTDOWN_SECONDS = 10


def prepare(settings: Settings) -> list:
    """Host pre-flight for the master: one line per problem, empty when ready."""
    problems = []
    data = Path(settings.data_dir)
    try:
        for sub in (data, settings.projects_dir, settings.backups_dir):
            sub.mkdir(parents=True, exist_ok=True)
        probe = data / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        problems.append("data directory %s is not writable: %s" % (data, e.strerror or e))
    if settings.tls_enable:
        for name in ("tls_cert", "tls_key"):
            path = getattr(settings, name)
            if not os.access(path, os.R_OK):
                problems.append("%s %s is not readable" % (name, path))
    problems += storage.master_prepare(settings)  # storage: only an explicit backend can fail
    if not port_free(settings.bind_address, settings.http_port):
        problems.append("port %d on %s is already in use; stop what uses it or set cdsw.http.port"
                        % (settings.http_port, settings.bind_address))
    engine_port = engine_listener_port(settings)
    if engine_port and not port_free(settings.bind_address, engine_port):
        problems.append("port %d on %s (engine content) is already in use; stop what uses it "
                        "or set cdsw.engine.port" % (engine_port, settings.bind_address))
    return problems


def prepare_database(settings: Settings) -> Database:
    """Take the data directory's master lock (a restore cannot run under a master), then bring
    the schema to the newest revision after a backup; a newer database is refused first."""
    try:
        lock.acquire(settings.data_dir, "master")
    except lock.LockBusy as e:
        raise UserError("another master or a `cdsw db restore` (pid %s) is using data directory "
                        "%s; stop it first" % (e, settings.data_dir))
    db = Database(settings.database_url, application_name=lock.MASTER_APPLICATION_NAME)
    backup = db.upgrade_with_backup(settings.backups_dir)
    if backup is not None:
        log.info("backup before schema upgrade: %s", backup)
    return db


def ensure_cluster_secret(settings: Settings) -> Settings:
    """The secret workers present to join: the admin's, or one generated at the first start and
    kept (mode 0600) in the data directory. Never logged."""
    if settings.cluster_secret:
        return settings
    path = Path(settings.data_dir) / "cluster-secret"
    if path.exists():
        secret = path.read_text().strip()
    else:
        secret = secrets.token_urlsafe(32)
        tmp = path.with_name(".cluster-secret.tmp")
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        os.replace(tmp, path)
        log.info("generated the cluster secret in %s; give it to the workers (cdsw.cluster.secret)",
                 path)
    return settings.with_overrides(cluster_secret=secret)


def collect_client_config(settings: Settings) -> None:
    """Bundle the Hadoop client configuration the cluster manager deployed on this gateway, so
    engines started from now on mount it. A bad directory keeps the previous bundle in use."""
    from ..clientconfig import bundles_dir, collect

    if not settings.hadoop_conf_dirs:
        log.info("no Hadoop client configuration dirs (cdsw.hadoop.conf.dirs): engines get none")
        return
    try:
        bundle = collect([Path(d) for d in settings.hadoop_conf_dirs], bundles_dir(settings))
    except UserError as e:
        log.error("Hadoop client configuration not collected, engines keep the previous one: %s",
                  e)
        return
    log.info("Hadoop client configuration %s (%s): %s", bundle.version,
             "unchanged" if bundle.reused else "new", ", ".join(bundle.kinds))


def start_engine_firewall(settings: Settings, state: Any) -> Optional[Callable[[], None]]:
    """With the swarm orchestrator, a thread that narrows this host's engine-port rule to the
    CDSW nodes (engine_firewall.NodeFirewall) every heartbeat interval, from the list the
    workers get (routes/cluster.py engine_nodes; state: the app's ServerState). Returns the
    function that stops it and puts the broad rule back; None for other orchestrators."""
    if settings.orchestrator != "swarm":
        return None
    from ..server.routes.cluster import engine_nodes
    from .engine_firewall import NodeFirewall
    from .worker import HEARTBEAT_SECONDS

    firewall, stop = NodeFirewall(), threading.Event()

    def keep() -> None:
        while not stop.is_set():
            try:
                firewall.update(engine_nodes(state))
            except Exception as e:  # the next round tries again; never ends the thread
                log.warning("engine firewall: nodes not updated: %s", str(e).splitlines()[0]
                            if str(e) else type(e).__name__)
            stop.wait(HEARTBEAT_SECONDS)
        firewall.reset()

    thread = threading.Thread(target=keep, name="engine-firewall", daemon=True)
    thread.start()

    def stop_keeping() -> None:
        stop.set()
        thread.join(30)
    return stop_keeping


def start(settings: Settings, db: Optional[Database] = None) -> None:
    """Run the master in the foreground until SIGTERM/SIGINT."""
    from ..server.app import create_app
    from ..server import http_workers, listen
    from .swarm import start_manager

    setup_logging(settings.log_level, settings.secret_values())
    problems = prepare(settings)
    if problems:
        raise UserError("; ".join(problems))
    db = db or prepare_database(settings)
    settings = ensure_cluster_secret(settings)
    setup_logging(settings.log_level, settings.secret_values())
    collect_client_config(settings)
    storage_service = storage.start_master(settings)  # storage: sshd for workers' mounts
    start_manager(settings)  # swarm orchestrator: this host's Docker becomes the swarm manager
    app = create_app(settings, db)
    ssl = {}
    if settings.tls_enable:
        ssl = {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
    log.info("CDSW master listening on %s:%d (%s)", settings.bind_address, settings.http_port,
             settings.base_url)
    # uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown; a no-op handler turns that
    # into a clean exit 0, which is what the cluster managers expect of a stopped role.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    if engine_listener_port(settings):
        log.info("engine content (JupyterLab) on port %d", engine_listener_port(settings))
    stop_firewall = start_engine_firewall(settings, app.state.server)
    # several workers: this process controls them (server/http_workers.py)
    serve = http_workers.serve if settings.master_http_workers > 1 else listen.serve
    try:
        serve(app, settings, settings.bind_address, settings.http_port, log_config=None,
              proxy_headers=False, ws="auto", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
              **ssl)
    finally:
        if stop_firewall is not None:
            stop_firewall()
    storage_service.stop()  # storage
    log.info("CDSW master stopped")


def status(settings: Settings, timeout: float = 3.0) -> bool:
    """True when the master answers /healthz on this host."""
    scheme = "https" if settings.tls_enable else "http"
    host = "127.0.0.1" if settings.bind_address in ("0.0.0.0", "") else settings.bind_address
    try:
        r = requests.get("%s://%s:%d/healthz" % (scheme, host, settings.http_port),
                         timeout=timeout, verify=False)
    except requests.RequestException:
        return False
    return r.status_code in (200, 503)
