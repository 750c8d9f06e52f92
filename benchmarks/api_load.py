"""API latency under concurrent clients: GET /api/v1/projects?limit=100 on a real master process,
side by side with a bare server returning the same bytes.

Starts `cdsw role master start` on loopback with a fresh data dir (SQLite, or PostgreSQL with
--db-url), creates a user with N projects and an API key, takes one answer of the list, and
starts a bare server (starlette on uvicorn, one worker, one route answering those bytes). Then
for each client count it runs interleaved rounds (ours, bare, ours, ...) of a fixed number of
requests from benchmarks/loadgen.py (its own process, keep-alive connections) and prints the
median round with ratios and the load average. --workers N runs the master with N HTTP worker
processes and their controller (setting master_http_workers; each client's keep-alive connection
stays with the worker that accepted it). Measures, never asserts.

    .venv/bin/python benchmarks/api_load.py [--projects 1000] [--clients 1,50] [--requests 2000]
        [--rounds 3] [--db-url URL] [--workers N] [--profile FILE [--profile-clients N]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: List[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


BARE_SERVER = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

body = open(sys.argv[1], "rb").read()


async def projects(request):
    return Response(body, media_type="application/json")


app = Starlette(routes=[Route("/api/v1/projects", projects), Route("/", projects)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""
LOADGEN = Path(__file__).resolve().with_name("loadgen.py")


def load(url: str, key: str, clients: int, total: int) -> Dict[str, Any]:
    out = subprocess.run([sys.executable, str(LOADGEN), url, "--header",
                          "Authorization: Bearer " + key, "--concurrency", str(clients),
                          "--requests", str(total)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def loadavg() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=1000)
    ap.add_argument("--clients", default="1,50")
    ap.add_argument("--requests", type=int, default=2000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db-url", default="")
    ap.add_argument("--workers", type=int, default=1,
                    help="the master's HTTP worker processes (setting master_http_workers)")
    ap.add_argument("--profile", default="", help="a file: py-spy profile of the master during "
                    "one extra round (needs py-spy)")
    ap.add_argument("--profile-clients", type=int, default=0,
                    help="clients during the profiled round (default: the last of --clients)")
    args = ap.parse_args()
    profile = ""

    tmp = Path(tempfile.mkdtemp(prefix="cdsw-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    env.update(CDSW_DATA_DIR=str(tmp), CDSW_HTTP_PORT=str(port), CDSW_BIND_ADDRESS="127.0.0.1",
               CDSW_CONF=str(tmp / "none.conf"), CDSW_PROPERTIES=str(tmp / "none.properties"),
               CDSW_LOG_LEVEL="warning", CDSW_ORCHESTRATOR="local",  # the API alone; no engines
               CDSW_ENGINE_PORT=str(free_port()))  # another master may hold the default 8081
    (tmp / "none.conf").write_text("")
    (tmp / "none.properties").write_text("")
    if args.db_url:
        env["CDSW_DB_URL"] = args.db_url
    env["CDSW_MASTER_HTTP_WORKERS"] = str(args.workers)
    cdsw = [sys.executable, "-m", "cdsw_agent.cli.main"]
    subprocess.run(cdsw + ["db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(cdsw + ["admin", "create-user", "bench", "--admin", "--password-stdin"], env=env,
                   input="bench-password-1\n", text=True, check=True, capture_output=True)
    server_log = open(tmp / "master.log", "w")
    server = subprocess.Popen(cdsw + ["role", "master", "start"], env=env, stdout=server_log,
                              stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + 180  # a loaded machine starts the master slowly
        while True:
            if server.poll() is not None:
                raise SystemExit("the master exited: %s" % (tmp / "master.log").read_text()[-500:])
            try:
                requests.get(base + "/healthz", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise SystemExit("the master did not answer in 180 s")
                time.sleep(0.1)
        s = requests.Session()
        r = s.post(base + "/api/v1/auth/signin", json={"username": "bench", "password": "bench-password-1"})
        r.raise_for_status()
        s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        key = s.post(base + "/api/v1/account/api-keys", json={"name": "bench"}).json()["key"]
        for i in range(args.projects):
            s.post(base + "/api/v1/projects", json={"name": "project %d" % i}).raise_for_status()

        answer = requests.get(base + "/api/v1/projects", params={"limit": 100},
                              headers={"Authorization": "Bearer " + key})
        answer.raise_for_status()
        (tmp / "answer.json").write_bytes(answer.content)
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(tmp / "answer.json"),
                                 str(bare_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        try:
            for _ in range(100):
                try:
                    requests.get("http://127.0.0.1:%d/" % bare_port, timeout=1)
                    break
                except requests.RequestException:
                    time.sleep(0.1)
            targets = {"workbench": base + "/api/v1/projects?limit=100",
                       "bare server, same bytes":
                           "http://127.0.0.1:%d/api/v1/projects?limit=100" % bare_port}
            rows = []
            loads = [loadavg()]
            for clients in [int(c) for c in args.clients.split(",")]:
                for url in targets.values():  # warm-up
                    load(url, key, clients, 200)
                results: Dict[str, List[Dict[str, Any]]] = {}
                for _ in range(args.rounds):
                    for label, url in targets.items():
                        results.setdefault(label, []).append(load(url, key, clients,
                                                                  args.requests))
                        loads.append(loadavg())
                rows.append((clients, results))
            if args.profile:
                from benchmarks.model_serving import profile_summary, profiled

                with profiled(server.pid, Path(args.profile)):
                    load(targets["workbench"], key, args.profile_clients or clients,
                         args.requests)
                profile = profile_summary(Path(args.profile))
        finally:
            bare.terminate()
            bare.wait(timeout=30)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    db = "PostgreSQL" if args.db_url else "SQLite"
    print("API: GET /api/v1/projects?limit=100 over %d projects, %s, master with %s; median "
          "of %d interleaved rounds of %d requests; %s, %d cores, Python %s; "
          "load average before/after: %s / %s" % (
              args.projects, db, "one process" if args.workers == 1 else
              "%d HTTP workers and its controller" % args.workers,
              args.rounds, args.requests, platform.machine(),
              os.cpu_count(), platform.python_version(), loads[0], loads[-1]))
    print()
    print("| clients | target | req/s | p50 ms | p99 ms | errors | req/s vs bare |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for clients, results in rows:
        bare_rps = statistics.median(r["rps"] for r in results["bare server, same bytes"])
        for label, rs in results.items():
            rps = statistics.median(r["rps"] for r in rs)
            print("| %d | %s | %.0f | %.1f | %.1f | %d | %.2f× |" % (
                clients, label, rps, statistics.median(r["p50_ms"] for r in rs),
                statistics.median(r["p99_ms"] for r in rs), sum(r["errors"] for r in rs),
                rps / bare_rps))
    print("\nload average per round: %s" % ", ".join(loads))
    if args.profile:
        print("\nProfile of the master at %d clients (py-spy, all threads):\n\n%s"
              % (args.profile_clients or rows[-1][0], profile))

if __name__ == "__main__":
    main()
