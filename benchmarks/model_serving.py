"""Model serving: requests/s and p50/p99 latency of POST /model at concurrency 32, with 1 and 4
replicas of a trivial function, on the swarm backend.

Sets up what tests/integration/test_models_swarm.py does (a network namespace with its own
dockerd from the CDSW_DOCKER role, a one-node swarm, the engine image copied onto it), starts a
real master process (`cdsw role master start`, orchestrator=swarm) on loopback, builds and
deploys the model through the API, then runs 32 concurrent callers (asyncio + httpx, in this
process) for a bounded number of requests per replica count and prints a table. Needs root and
dockerd (like the docker tests). Measures, never asserts.

    .venv/bin/python benchmarks/model_serving.py [--replicas 1,4] [--concurrency 32] [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.api_load import free_port, percentile  # noqa: E402

MODEL_PY = "def predict(args):\n    return {\"echo\": args}\n"


def engine_image() -> Tuple[Any, str]:
    """The test dockerd and the engine image on it (built, or reused from the test cache)."""
    import docker

    from cdsw_agent.images import Progress, Recipe, build_image
    from tests.integration.docker_fixtures import CACHE_DIR, START_SCRIPT

    url = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    client = docker.DockerClient(base_url=url, version="auto", timeout=300)
    return client, build_image(client, Recipe(), CACHE_DIR, Progress(lambda _: None)).image


async def load(url: str, key: str, concurrency: int, total: int) -> Dict[str, Any]:
    latencies: List[float] = []
    errors = [0]
    remaining = [total]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def caller(i: int) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, json={"accessKey": key, "request": {"i": i}})
                except httpx.TransportError:  # a dropped connection is an error, not the end
                    errors[0] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200 or not r.json().get("success"):
                    errors[0] += 1

        await asyncio.gather(*(caller(i) for i in range(concurrency)))  # warm-up below
    return {"latencies": latencies, "errors": errors[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", default="1,4")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=4000, help="requests per replica count")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (it starts dockerd in a network namespace)")

    from cdsw_agent.images import transfer
    from cdsw_agent.roles import swarm as swarm_mgr
    from cdsw_agent.settings import load_settings
    from tests.integration.netns import Lab, available, docker_env, start_docker_role

    reason = available()
    if reason:
        raise SystemExit("cannot make a swarm host here: %s" % reason)
    tmp = Path(tempfile.mkdtemp(prefix="cdsw-bench-models-"))
    test_docker, image = engine_image()
    saved = transfer.save_image(test_docker, image, tmp / "engine.tar")
    cdsw = str(Path(sys.executable).with_name("cdsw"))
    rows = []
    with Lab(Path("/var/lib/cdsw-lab") / ("bench-" + os.urandom(3).hex())) as lab:
        h1 = lab.add_host("h1")
        _, client = start_docker_role(h1, cdsw)
        transfer.load_image(client, saved.path)
        denv = docker_env(h1)
        swarm_mgr.ensure_manager(client, load_settings(environ=dict(
            denv, CDSW_MASTER_HOST=h1.address)))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
        env.update(CDSW_DATA_DIR=str(tmp / "data"), CDSW_HTTP_PORT=str(port),
                   CDSW_BIND_ADDRESS="127.0.0.1", CDSW_CONF=str(tmp / "none.conf"),
                   CDSW_PROPERTIES=str(tmp / "none.properties"), CDSW_LOG_LEVEL="warning",
                   CDSW_ORCHESTRATOR="swarm", CDSW_DOCKER_HOST=denv["CDSW_DOCKER_HOST"],
                   CDSW_MASTER_HOST=h1.address, CDSW_STORAGE_BACKEND="local")
        (tmp / "none.conf").write_text("")
        (tmp / "none.properties").write_text("")
        run = [sys.executable, "-m", "cdsw_agent.cli.main"]
        subprocess.run(run + ["db", "upgrade"], env=env, check=True, capture_output=True)
        subprocess.run(run + ["admin", "create-user", "bench", "--admin", "--password-stdin"],
                       env=env, input="bench-password-1\n", text=True, check=True,
                       capture_output=True)
        log = open(tmp / "master.log", "w")
        master = subprocess.Popen(run + ["role", "master", "start"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        base = "http://127.0.0.1:%d" % port
        try:
            api = httpx.Client(base_url=base, timeout=60)
            for _ in range(300):
                if master.poll() is not None:
                    raise SystemExit("the master exited: %s"
                                     % (tmp / "master.log").read_text()[-800:])
                try:
                    api.get("/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            r = api.post("/api/v1/auth/signin", json={"username": "bench",
                                                      "password": "bench-password-1"})
            r.raise_for_status()
            api.headers["X-CSRF-Token"] = r.json()["csrf_token"]
            repo, _, tag = image.rpartition(":")
            api.post("/api/v1/engine-images", json={"repository": repo, "tag": tag,
                                                    "is_default": True}).raise_for_status()
            pid = api.post("/api/v1/projects", json={"name": "bench"}).json()["id"]
            api.put("/api/v1/projects/%d/files/content" % pid,
                    json={"path": "model.py", "content": MODEL_PY}).raise_for_status()
            mbase = "/api/v1/projects/%d/models" % pid
            model = api.post(mbase, json={"name": "echo", "file": "model.py",
                                          "function": "predict"}).json()
            mbase += "/%d" % model["id"]
            build = api.post(mbase + "/builds").json()
            while api.get(mbase + "/builds/%d" % build["id"]).json()["status"] in (
                    "queued", "building"):
                time.sleep(0.5)
            deployed = False
            for n in [int(x) for x in args.replicas.split(",")]:
                if not deployed:
                    api.post(mbase + "/deployment", json={"replicas": n}).raise_for_status()
                    deployed = True
                else:
                    api.post(mbase + "/deployment/scale", json={"replicas": n}).raise_for_status()
                deadline = time.monotonic() + 300
                while True:
                    d = api.get(mbase).json()["deployment"]
                    live = [x for x in d["replica_states"] if x["state"] != "failed"]
                    if d["status"] == "deployed" and len(live) == n:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit("deployment did not become ready: %s" % d)
                    time.sleep(0.5)
                url = base + "/model"
                asyncio.run(load(url, model["access_key"], args.concurrency, 200))  # warm-up
                t0 = time.perf_counter()
                result = asyncio.run(load(url, model["access_key"], args.concurrency,
                                          args.requests))
                wall = time.perf_counter() - t0
                lat = result["latencies"]
                rows.append((n, args.concurrency, len(lat), len(lat) / wall,
                             percentile(lat, 50) * 1000, percentile(lat, 99) * 1000,
                             result["errors"]))
            api.post(mbase + "/deployment/stop")
            time.sleep(2)
        finally:
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(timeout=60)
            except subprocess.TimeoutExpired:
                master.kill()
            for s in client.services.list(filters={"label": "io.cdsw.kind=model"}):
                s.remove()
            client.close()

    print("Model serving: POST /model, trivial function, swarm backend (1 node), master "
          "(1 uvicorn worker) and client on one host, %s, %d cores, Python %s"
          % (platform.machine(), os.cpu_count(), platform.python_version()))
    print("| replicas | concurrency | requests | req/s | p50 ms | p99 ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| %d | %d | %d | %.0f | %.1f | %.1f | %d |" % row)


if __name__ == "__main__":
    main()
