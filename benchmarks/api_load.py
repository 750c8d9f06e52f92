"""API latency under concurrent clients: GET /api/v1/projects on a real master process.

Starts `cdsw role master start` on loopback with a fresh data dir (SQLite, or PostgreSQL with
--db-url), creates a user with N projects, then runs C concurrent clients for a bounded number
of requests each and prints a table. Measures, never asserts.

    .venv/bin/python benchmarks/api_load.py [--projects 200] [--clients 1,8,32] [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: List[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=200)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", type=int, default=200, help="requests per client")
    ap.add_argument("--db-url", default="")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cdsw-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    env.update(CDSW_DATA_DIR=str(tmp), CDSW_HTTP_PORT=str(port), CDSW_BIND_ADDRESS="127.0.0.1",
               CDSW_CONF=str(tmp / "none.conf"), CDSW_PROPERTIES=str(tmp / "none.properties"),
               CDSW_LOG_LEVEL="warning", CDSW_ORCHESTRATOR="local")  # the API alone; no engines
    (tmp / "none.conf").write_text("")
    (tmp / "none.properties").write_text("")
    if args.db_url:
        env["CDSW_DB_URL"] = args.db_url
    cdsw = [sys.executable, "-m", "cdsw_agent.cli.main"]
    subprocess.run(cdsw + ["db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(cdsw + ["admin", "create-user", "bench", "--admin", "--password-stdin"], env=env,
                   input="bench-password-1\n", text=True, check=True, capture_output=True)
    server_log = open(tmp / "master.log", "w")
    server = subprocess.Popen(cdsw + ["role", "master", "start"], env=env, stdout=server_log,
                              stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    try:
        for _ in range(100):
            if server.poll() is not None:
                raise SystemExit("the master exited: %s" % (tmp / "master.log").read_text()[-500:])
            try:
                requests.get(base + "/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        s = requests.Session()
        r = s.post(base + "/api/v1/auth/signin", json={"username": "bench", "password": "bench-password-1"})
        r.raise_for_status()
        s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        key = s.post(base + "/api/v1/account/api-keys", json={"name": "bench"}).json()["key"]
        for i in range(args.projects):
            s.post(base + "/api/v1/projects", json={"name": "project %d" % i}).raise_for_status()

        rows = []
        for clients in [int(c) for c in args.clients.split(",")]:
            latencies: List[float] = []
            errors = [0]
            lock = threading.Lock()

            def worker() -> None:
                sess = requests.Session()
                sess.headers["Authorization"] = "Bearer " + key
                mine = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    resp = sess.get(base + "/api/v1/projects", params={"limit": 100})
                    mine.append(time.perf_counter() - t0)
                    if resp.status_code != 200:
                        errors[0] += 1
                with lock:
                    latencies.extend(mine)

            threads = [threading.Thread(target=worker) for _ in range(clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            rows.append((clients, len(latencies), len(latencies) / wall, statistics.median(latencies) * 1000,
                         percentile(latencies, 95) * 1000, percentile(latencies, 99) * 1000, errors[0]))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    db = "PostgreSQL" if args.db_url else "SQLite"
    print("API: GET /api/v1/projects (100 of %d projects), %s, %s, %d cores, Python %s"
          % (args.projects, db, platform.machine(), os.cpu_count(), platform.python_version()))
    print("| clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| %d | %d | %.0f | %.1f | %.1f | %.1f | %d |" % row)


if __name__ == "__main__":
    main()
