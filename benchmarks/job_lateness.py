"""Job scheduling lateness against the cron time, on the swarm backend.

Starts one gateway host (a network namespace with its own dockerd from the CDSW_DOCKER role, as
in tests/integration/netns.py) running the real master (`cdsw role master start`), loads the
engine image (built, or found in the test image cache, on the test dockerd), and schedules a job
every minute (`* * * * *`) whose script prints the engine's clock: a shell script, or with
`--language py` a Python script, which runs in the engine's kernel. For each run it reports how
long after the scheduled minute the master recorded the run, launched its engine (the swarm
service was created) and the script started inside the container (negative: ahead of the
minute, as cron runs start their engine). Needs root and dockerd. Measures, never asserts.

    .venv/bin/python benchmarks/job_lateness.py [--runs 3] [--language sh|py]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.docker_fixtures import CACHE_DIR  # noqa: E402
from tests.integration.netns import (Lab, available, docker_env, start_docker_role,  # noqa: E402
                                     wait_for)

CDSW = str(Path(sys.executable).with_name("cdsw"))
PORT = 18743
ADMIN, PASSWORD = "bench", "pw-" + os.urandom(6).hex()
FINAL = ("succeeded", "failed", "timed_out", "stopped", "lost", "skipped")


def engine_image() -> Tuple[str, Any]:
    """The engine image of this checkout on the test dockerd (built once, then cached), and a
    client of that dockerd."""
    import docker

    from cdsw_agent.images import Progress, Recipe, build_image

    proc = subprocess.run(["bash", str(ROOT / "scripts" / "ci" / "start_dockerd.sh")],
                          capture_output=True, text=True, timeout=300, check=True)
    client = docker.DockerClient(base_url=proc.stdout.strip().splitlines()[-1], version="auto",
                                 timeout=600)
    result = build_image(client, Recipe(), CACHE_DIR, Progress(lambda line: None))
    return result.image, client


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


SCRIPTS = {"sh": ("clock.sh", "date +%s.%N\n"),
           "py": ("clock.py", "import time\nprint(repr(time.time()))\n")}


def measure(runs: int, language: str = "sh") -> List[Dict[str, float]]:
    from cdsw_agent.images import transfer

    reason = available()
    if reason:
        raise SystemExit("cannot make a gateway host here: %s" % reason)
    image, shared = engine_image()
    tar = Path("/var/lib/cdsw-lab") / ("bench-engine-%s.tar" % os.urandom(3).hex())
    saved = transfer.save_image(shared, image, tar)
    try:
        with Lab(Path("/var/lib/cdsw-lab") / ("bench-" + os.urandom(3).hex())) as lab:
            h1 = lab.add_host("h1")
            env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
            (lab.root / "empty.conf").write_text("")
            (lab.root / "empty.properties").write_text("")
            env.update(docker_env(h1), CDSW_CONF=str(lab.root / "empty.conf"),
                       CDSW_PROPERTIES=str(lab.root / "empty.properties"),
                       CDSW_ORCHESTRATOR="swarm", CDSW_CLUSTER_SECRET=os.urandom(12).hex(),
                       CDSW_HTTP_PORT=str(PORT), CDSW_STORAGE_BACKEND="local",
                       CDSW_MASTER_HOST=h1.address, CDSW_BIND_ADDRESS=h1.address,
                       CDSW_LOG_LEVEL="warning")
            _, client = start_docker_role(h1, CDSW)
            transfer.load_image(client, saved.path)
            master = h1.popen([CDSW, "role", "master", "start"], env=env, log_name="master.log")
            url = "http://%s:%d" % (h1.address, PORT)

            def up() -> bool:
                if master.poll() is not None:
                    raise SystemExit("master exited: %s" % h1.log("master.log")[-1500:])
                try:
                    return requests.get(url + "/healthz", timeout=2).status_code == 200
                except requests.RequestException:
                    return False

            wait_for(up, 120, "the master API")
            subprocess.run(h1.wrap([CDSW, "admin", "create-user", ADMIN, "--admin",
                                    "--password-stdin"]), input=PASSWORD + "\n", text=True,
                           capture_output=True, env=dict(os.environ, **env), timeout=60,
                           check=True)
            return _schedule_and_wait(url, image, runs, language)
    finally:
        tar.unlink(missing_ok=True)


def _ok(r: requests.Response) -> Any:
    if r.status_code >= 300:
        raise SystemExit("%s %s -> %d %s" % (r.request.method, r.request.url, r.status_code,
                                              r.text[:500]))
    return r.json()


def _schedule_and_wait(url: str, image: str, runs: int, language: str
                       ) -> List[Dict[str, float]]:
    http = requests.Session()
    r = _ok(http.post(url + "/api/v1/auth/signin",
                      json={"username": ADMIN, "password": PASSWORD}))
    http.headers["X-CSRF-Token"] = r["csrf_token"]
    repository, tag = image.rsplit(":", 1)
    _ok(http.post(url + "/api/v1/engine-images", json={"repository": repository, "tag": tag,
                                                       "is_default": True}))
    project = _ok(http.post(url + "/api/v1/projects", json={"name": "lateness"}))["id"]
    script, text = SCRIPTS[language]
    _ok(http.put(url + "/api/v1/projects/%d/files/content" % project,
                 json={"path": script, "content": text}))
    jobs = url + "/api/v1/projects/%d/jobs" % project
    job = _ok(http.post(jobs, json={"name": "every-minute", "script": script,
                                    "schedule": "* * * * *", "timezone": "UTC"}))["id"]
    deadline = time.monotonic() + 70 * (runs + 2)
    while True:
        done = [r for r in _ok(http.get("%s/%d/runs" % (jobs, job))) if r["status"] in FINAL]
        if len(done) >= runs:
            break
        if time.monotonic() > deadline:
            raise SystemExit("only %d runs ended in time" % len(done))
        time.sleep(2)
    _ok(http.patch("%s/%d" % (jobs, job), json={"enabled": False}))
    rows = []
    for run in sorted(done, key=lambda r: r["id"])[:runs]:
        created = utc(run["created_at"])
        # the fire time: the nearest minute (a run is recorded up to PRESTART_SECONDS ahead)
        minute = (created + dt.timedelta(seconds=30)).replace(second=0, microsecond=0)
        log = http.get("%s/%d/runs/%d/log" % (jobs, job, run["id"])).text.split()
        engine = float(log[0]) - minute.timestamp() if log else float("nan")
        rows.append({"run": run["id"], "status": run["status"],
                     "recorded": (created - minute).total_seconds(),
                     "launched": (utc(run["started_at"]) - minute).total_seconds(),
                     "engine": engine})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="scheduled runs to measure (one a minute)")
    ap.add_argument("--language", choices=sorted(SCRIPTS), default="sh",
                    help="the job's script: shell, or Python (run in the engine's kernel)")
    args = ap.parse_args()
    before = "%.2f %.2f %.2f" % os.getloadavg()
    rows = measure(args.runs, args.language)
    print("> job lateness after the cron minute, %s script, swarm backend (1 node), %s, %d "
          "cores, Python %s; load average before/after: %s / %s" % (
              SCRIPTS[args.language][0], platform.machine(), os.cpu_count() or 0,
              platform.python_version(), before,
              "%.2f %.2f %.2f" % os.getloadavg()))
    print()
    print("| run | status | run recorded s | engine launched s | script started s |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print("| %(run)d | %(status)s | %(recorded).2f | %(launched).2f | %(engine).2f |" % r)
    for key in ("recorded", "launched", "engine"):
        values = [r[key] for r in rows]
        print("%s: median %.2f s, max %.2f s" % (key, statistics.median(values), max(values)))


if __name__ == "__main__":
    main()
