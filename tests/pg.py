"""A real PostgreSQL server for the tests, started in a temporary folder on loopback.

Runs as the `postgres` system user when the tests run as root (PostgreSQL refuses root).
Password authentication over TCP (scram-sha-256) so the URLs carry a real password.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import List, Optional

PASSWORD = "pg-test-Secret-42"


def _bin(name: str) -> Optional[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/" + name))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    root: str
    port: int
    run_as: List[str]

    def url(self, database: str = "postgres") -> str:
        return "postgresql://cdsw:%s@127.0.0.1:%d/%s" % (PASSWORD, self.port, database)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(self.run_as + [_bin("psql") or "psql", "-h", self.root, "-p", str(self.port),
                                            "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1",
                                            "-Atc", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.psql("CREATE DATABASE %s OWNER cdsw" % name)
        return name

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server as an admin would (fast: clients are disconnected), stay down for
        down_seconds, then start it again on the same port and data."""
        pg_ctl = _bin("pg_ctl") or "pg_ctl"
        subprocess.run(self.run_as + [pg_ctl, "-D", self.root + "/data", "-m", "fast", "-w",
                                      "stop"], check=True, capture_output=True)
        time.sleep(down_seconds)
        subprocess.run(self.run_as + [pg_ctl, "-D", self.root + "/data", "-l", self.root + "/log",
                                      "-o", _options(self.port, self.root), "-w", "-t", "60",
                                      "start"], check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(self.run_as + [_bin("pg_ctl") or "pg_ctl", "-D", self.root + "/data", "-m",
                                      "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _options(port: int, root: str) -> str:
    return "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" % (port, root)


def start() -> PostgresServer:
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL server binaries not found; install the postgresql package "
                           "(scripts/test.sh does)")
    root = tempfile.mkdtemp(prefix="cdsw-pg-")
    run_as: List[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(run_as + [initdb, "-D", root + "/data", "-U", "postgres", "--auth-local=trust",
                             "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    opts = _options(port, root)
    proc = subprocess.run(run_as + [pg_ctl, "-D", root + "/data", "-l", root + "/log", "-o", opts,
                                    "-w", "-t", "60", "start"], capture_output=True, text=True)
    if proc.returncode != 0:
        log = open(root + "/log").read() if os.path.exists(root + "/log") else ""
        raise RuntimeError("PostgreSQL did not start: %s %s" % (proc.stderr, log[-2000:]))
    server = PostgresServer(root, port, run_as)
    server.psql("CREATE ROLE cdsw LOGIN CREATEDB PASSWORD '%s'" % PASSWORD)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return server
