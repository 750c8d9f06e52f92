"""Model serving: requests/s and p50/p99 latency at concurrency 32 of POST /model through the
workbench (1 and 4 replicas of a trivial function), side by side in one run with its peers:
`mlflow models serve` (one uvicorn worker, in its own virtualenv) serving the same function,
and one replica of ours called directly (the replica program on loopback, no master).

Rounds are interleaved (ours, mlflow, direct, ours, ...) so that a busy machine slows all of
them alike; each table row is the median round. The load comes from benchmarks/loadgen.py in its
own process (aiohttp on uvloop), the same for every target. Measures, never asserts.

    .venv/bin/python benchmarks/model_serving.py [--backend local|swarm] [--replicas 1,4]
        [--concurrency 32] [--requests 3000] [--rounds 3] [--mlflow-venv DIR]

--backend local (default) runs the replicas as processes on this host (`cdsw standalone`'s
backend): no Docker. --backend swarm sets up what tests/integration/test_models_swarm.py does (a
network namespace with its own dockerd from the CDSW_DOCKER role, a one-node swarm, the engine
image copied onto it; root), never a host dockerd. The mlflow virtualenv is made on first use
(pip install mlflow-skinny pandas) under ~/.cache/cdsw-bench/mlflow unless --mlflow-venv names
one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.api_load import free_port  # noqa: E402

MODEL_PY = "def predict(args):\n    return {\"echo\": args}\n"
MLFLOW_SAVE = """
import sys
import mlflow.pyfunc

class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return {"echo": model_input}

mlflow.pyfunc.save_model(sys.argv[1], python_model=Echo())
"""
LOADGEN = ROOT / "benchmarks" / "loadgen.py"


def load(url: str, body: Dict[str, Any], concurrency: int, total: int, expect: str = "",
         headers: Tuple[str, ...] = ()) -> Dict[str, Any]:
    cmd = [sys.executable, str(LOADGEN), url, "--method", "POST", "--body", json.dumps(body),
           "--header", "Content-Type: application/json", "--concurrency", str(concurrency),
           "--requests", str(total)]
    for h in headers:
        cmd += ["--header", h]
    if expect:
        cmd += ["--expect-json-true", expect]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def wait_http(url: str, proc: "subprocess.Popen[Any]", what: str, log: Path,
              timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit("%s exited: %s" % (what, log.read_text()[-800:]))
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise SystemExit("%s did not answer: %s" % (what, log.read_text()[-800:]))
            time.sleep(0.2)


def stop(proc: "subprocess.Popen[Any]") -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the peers ------------------------------------------------------------------------------

def mlflow_venv(path: str) -> Path:
    venv = Path(path or Path.home() / ".cache" / "cdsw-bench" / "mlflow").expanduser()
    if not (venv / "bin" / "mlflow").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mlflow-skinny", "pandas"],
                       check=True)
    return venv


@contextlib.contextmanager
def mlflow_server(venv: Path, tmp: Path) -> Iterator[str]:
    model = tmp / "mlflow-model"
    subprocess.run([str(venv / "bin" / "python"), "-c", MLFLOW_SAVE, str(model)], check=True,
                   capture_output=True)
    port = free_port()
    log = tmp / "mlflow.log"
    env = dict(os.environ, PATH="%s:%s" % (venv / "bin", os.environ.get("PATH", "")))
    proc = subprocess.Popen([str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(model),
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
                             "-w", "1"], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http("http://127.0.0.1:%d/ping" % port, proc, "mlflow models serve", log)
        yield "http://127.0.0.1:%d/invocations" % port
    finally:  # mlflow runs uvicorn as a child: stop the whole group it leads
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        stop(proc)


@contextlib.contextmanager
def direct_replica(tmp: Path) -> Iterator[Tuple[str, str]]:
    """One replica of ours on loopback, as the local backend starts it: (url, token)."""
    folder = tmp / "direct"
    folder.mkdir()
    (folder / "model.py").write_text(MODEL_PY)
    port, token = free_port(), os.urandom(16).hex()
    env = dict(os.environ, CDSW_MODEL_FILE="model.py", CDSW_MODEL_FUNCTION="predict",
               CDSW_MODEL_PORT=str(port), CDSW_MODEL_TOKEN=token)
    log = tmp / "direct.log"
    proc = subprocess.Popen([sys.executable, "-m", "cdsw_agent.engine.model_server"], env=env,
                            cwd=str(folder), stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_http("http://127.0.0.1:%d/health" % port, proc, "the replica", log)
        yield "http://127.0.0.1:%d/" % port, token
    finally:
        stop(proc)


# --- ours -----------------------------------------------------------------------------------

def engine_image() -> Tuple[Any, str]:
    """The test dockerd and the engine image on it (built, or reused from the test cache)."""
    import docker

    from cdsw_agent.images import Progress, Recipe, build_image
    from tests.integration.docker_fixtures import CACHE_DIR, START_SCRIPT

    url = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    client = docker.DockerClient(base_url=url, version="auto", timeout=300)
    return client, build_image(client, Recipe(), CACHE_DIR, Progress(lambda _: None)).image



@contextlib.contextmanager
def swarm_backend(tmp: Path) -> Iterator[Dict[str, str]]:
    """A one-node swarm in a network namespace: the master's environment for it."""
    from cdsw_agent.images import transfer
    from cdsw_agent.roles import swarm as swarm_mgr
    from cdsw_agent.settings import load_settings
    from tests.integration.netns import Lab, available, docker_env, start_docker_role

    if os.geteuid() != 0:
        raise SystemExit("--backend swarm needs root (it starts dockerd in a network namespace)")
    reason = available()
    if reason:
        raise SystemExit("cannot make a swarm host here: %s" % reason)
    test_docker, image = engine_image()
    saved = transfer.save_image(test_docker, image, tmp / "engine.tar")
    cdsw = str(Path(sys.executable).with_name("cdsw"))
    with Lab(Path("/var/lib/cdsw-lab") / ("bench-" + os.urandom(3).hex())) as lab:
        h1 = lab.add_host("h1")
        _, client = start_docker_role(h1, cdsw)
        transfer.load_image(client, saved.path)
        denv = docker_env(h1)
        swarm_mgr.ensure_manager(client, load_settings(environ=dict(
            denv, CDSW_MASTER_HOST=h1.address)))
        try:
            yield {"CDSW_ORCHESTRATOR": "swarm", "CDSW_DOCKER_HOST": denv["CDSW_DOCKER_HOST"],
                   "CDSW_MASTER_HOST": h1.address, "_image": image}
        finally:
            for s in client.services.list(filters={"label": "io.cdsw.kind=model"}):
                s.remove()
            client.close()


@contextlib.contextmanager
def local_backend(tmp: Path) -> Iterator[Dict[str, str]]:
    try:
        yield {"CDSW_ORCHESTRATOR": "local"}
    finally:  # local replicas outlive their master by design: none may outlive the benchmark
        from cdsw_agent.orchestrators import get_orchestrator
        from cdsw_agent.settings import load_settings

        orchestrator = get_orchestrator(load_settings(
            conf_path=None, properties_path=None, environ={},
            overrides={"data_dir": str(tmp / "data"), "orchestrator": "local"}))
        for ref in orchestrator.list():
            orchestrator.remove(ref.id)


@contextlib.contextmanager
def master(tmp: Path, backend: Dict[str, str]) -> Iterator[Tuple[httpx.Client, str]]:
    """A real master process (`cdsw role master start`) on loopback, signed in as an admin."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    env.update(CDSW_DATA_DIR=str(tmp / "data"), CDSW_HTTP_PORT=str(port),
               CDSW_BIND_ADDRESS="127.0.0.1", CDSW_CONF=str(tmp / "none.conf"),
               CDSW_PROPERTIES=str(tmp / "none.properties"), CDSW_LOG_LEVEL="warning",
               CDSW_STORAGE_BACKEND="local")
    env.update({k: v for k, v in backend.items() if not k.startswith("_")})
    (tmp / "none.conf").write_text("")
    (tmp / "none.properties").write_text("")
    run = [sys.executable, "-m", "cdsw_agent.cli.main"]
    subprocess.run(run + ["db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(run + ["admin", "create-user", "bench", "--admin", "--password-stdin"],
                   env=env, input="bench-password-1\n", text=True, check=True,
                   capture_output=True)
    log = tmp / "master.log"
    proc = subprocess.Popen(run + ["role", "master", "start"], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    try:
        wait_http(base + "/healthz", proc, "the master", log)
        api = httpx.Client(base_url=base, timeout=60)
        r = api.post("/api/v1/auth/signin", json={"username": "bench",
                                                  "password": "bench-password-1"})
        r.raise_for_status()
        api.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        api.master_pid = proc.pid  # type: ignore[attr-defined]
        yield api, base
    finally:
        stop(proc)


def deploy(api: httpx.Client, backend: Dict[str, str]) -> Tuple[str, Callable[[int], None],
                                                                  Callable[[], None]]:
    """Builds the echo model: (access key, deploy/scale to n replicas, stop the deployment)."""
    if "_image" in backend:
        repo, _, tag = backend["_image"].rpartition(":")
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
    while api.get(mbase + "/builds/%d" % build["id"]).json()["status"] in ("queued", "building"):
        time.sleep(0.5)
    deployed = [False]

    def scale(n: int) -> None:
        if not deployed[0]:
            api.post(mbase + "/deployment", json={"replicas": n}).raise_for_status()
            deployed[0] = True
        else:
            api.post(mbase + "/deployment/scale", json={"replicas": n}).raise_for_status()
        deadline = time.monotonic() + 300
        while True:
            d = api.get(mbase).json()["deployment"]
            live = [x for x in d["replica_states"] if x["state"] == "ready"]
            if d["status"] == "deployed" and len(live) == n \
                    and len(d["replica_states"]) == n:
                return
            if time.monotonic() > deadline:
                raise SystemExit("deployment did not become ready: %s" % d)
            time.sleep(0.5)

    def stop_deployment() -> None:
        if deployed[0]:
            api.post(mbase + "/deployment/stop")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (api.get(mbase).json()["deployment"] or {}) \
                    .get("replica_states"):
                time.sleep(0.5)

    return model["access_key"], scale, stop_deployment


@contextlib.contextmanager
def profiled(pid: int, out: Path) -> Iterator[None]:
    """py-spy samples the process (and its threads, subprocesses excluded) while the block runs;
    collapsed stacks go to `out`."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists() and shutil.which("py-spy") is None:
        sys.exit("--profile needs py-spy: pip install py-spy (the dev extra, .[dev])")
    spy = subprocess.Popen([str(exe) if exe.exists() else "py-spy", "record", "--pid", str(pid), "--rate", "250",
                            "--nonblocking", "--format", "raw", "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def profile_summary(raw: Path, top: int = 25) -> str:
    """The functions holding the most samples (inclusive), and where time is spent (self)."""
    inclusive: Dict[str, int] = {}
    leaf: Dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split("/")[-1].split(":")[0] + ")"
                  if " (" in f else f for f in stack.split(";")]
        total += n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + n
    lines = ["%d samples" % total, "", "| inclusive % | self % | function (file) |",
             "|---:|---:|---|"]
    for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append("| %.1f | %.1f | `%s` |" % (100.0 * n / total, 100.0 * leaf.get(f, 0)
                                                / total, f))
    lines += ["", "self time, top %d:" % top, "", "| self % | function (file) |", "|---:|---|"]
    for f, n in sorted(leaf.items(), key=lambda kv: -kv[1])[:top]:
        lines.append("| %.1f | `%s` |" % (100.0 * n / total, f))
    return "\n".join(lines)


def loadavg() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("local", "swarm"), default="local")
    ap.add_argument("--replicas", default="1,4")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=3000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mlflow-venv", default="")
    ap.add_argument("--workers", type=int, default=1,
                    help="the master's HTTP worker processes (setting master_http_workers)")
    ap.add_argument("--profile", default="", help="a folder: py-spy profiles of the master "
                    "during one extra round per replica count (needs py-spy)")
    args = ap.parse_args()
    c, n_req = args.concurrency, args.requests
    tmp = Path(tempfile.mkdtemp(prefix="cdsw-bench-models-"))
    venv = mlflow_venv(args.mlflow_venv)
    results: Dict[str, List[Dict[str, Any]]] = {}
    loads: List[str] = [loadavg()]
    profiles: Dict[int, str] = {}
    make_backend = swarm_backend if args.backend == "swarm" else local_backend
    try:
        with make_backend(tmp) as backend, \
                master(tmp, dict(backend, CDSW_MASTER_HTTP_WORKERS=str(args.workers))) as (
                    api, base), \
                mlflow_server(venv, tmp) as mlflow_url, direct_replica(tmp) as (direct, token):
            key, scale, stop_deployment = deploy(api, backend)
            ours_body = {"accessKey": key, "request": {"i": 1}}
            targets: Dict[str, Callable[[int], Dict[str, Any]]] = {
                "mlflow models serve (1 worker)": lambda n: load(
                    mlflow_url, {"inputs": {"i": 1}}, c, n),
                "one replica, called directly": lambda n: load(
                    direct, {"i": 1}, c, n, "success", ("X-CDSW-Model-Token: " + token,)),
            }
            for replicas in [int(x) for x in args.replicas.split(",")]:
                scale(replicas)
                name = "workbench POST /model, %d replica%s" % (replicas,
                                                                 "s" if replicas > 1 else "")
                targets[name] = lambda n: load(base + "/model", ours_body, c, n, "success")
                for run in targets.values():  # warm-up: connections, imports, JIT-free caches
                    run(300)
                for _ in range(args.rounds):
                    for label, run in targets.items():
                        if label.startswith("workbench") and label != name:
                            continue
                        results.setdefault(label, []).append(run(n_req))
                        loads.append(loadavg())
                if args.profile:
                    out = Path(args.profile) / ("master-%d-replicas.txt" % replicas)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with profiled(api.master_pid, out):  # type: ignore[attr-defined]
                        targets[name](n_req)
                    profiles[replicas] = profile_summary(out)
            stop_deployment()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    mlflow = "mlflow models serve (1 worker)"
    direct_label = "one replica, called directly"
    print("Model serving at concurrency %d, trivial function, %s backend, master with %d HTTP "
          "worker(s), median of %d interleaved rounds of %d requests; %s, %d cores, Python %s; "
          "load average before/after: %s / %s" % (c, args.backend, args.workers, args.rounds,
                                                   n_req, platform.machine(),
                                      os.cpu_count(), platform.python_version(), loads[0],
                                      loads[-1]))
    print()
    print("| target | req/s | p50 ms | p99 ms | errors | req/s vs mlflow | p99 vs mlflow "
          "| req/s vs direct replica |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label in results:
        rps, p50, p99 = median(label, "rps"), median(label, "p50_ms"), median(label, "p99_ms")
        errors = sum(r["errors"] for r in results[label])
        print("| %s | %.0f | %.1f | %.1f | %d | %.2f× | %.2f× | %.2f× |" % (
            label, rps, p50, p99, errors, rps / median(mlflow, "rps"),
            p99 / median(mlflow, "p99_ms"), rps / median(direct_label, "rps")))
    kinds = {label: [r["error_kinds"] for r in rs if r["errors"]] for label, rs in results.items()}
    if any(kinds.values()):
        print("\nerrors: %s" % {k: v for k, v in kinds.items() if v})
    ours = [label for label in results if label.startswith("workbench")]
    if len(ours) > 1:
        print("\n%s / %s: %.2f×" % (ours[-1], ours[0], median(ours[-1], "rps")
                                     / median(ours[0], "rps")))
    print("rounds (req/s): %s" % {k: [round(r["rps"]) for r in v] for k, v in results.items()})
    print("load average per round: %s" % ", ".join(loads))
    for replicas, summary in profiles.items():
        print("\nProfile of the master (py-spy, all threads), %d replica(s):\n\n%s"
              % (replicas, summary))


if __name__ == "__main__":
    main()
