"""Session start: from the start request to a kernel answering `1+1`, p50/p95 over N starts
per target, side by side in one run with the same engine image on the same dockerd, started in
turn (workbench, bare, hub, then the next round in a rotated order) so that a busy machine slows
them alike. Measures, never asserts.

Targets (--targets, default all four):
  workbench   the master app in this process, swarm backend: POST /api/v1/projects/P/sessions,
              poll the session until `running`, then execute `1+1` through the master's API
              (its kernel channel proxy); the session is stopped between starts. No warm
              engine waits: each start is a cold engine.
  warm        the same request, with one warm engine waiting (session_warm_engines=1,
              sessions/warm_pool.py): the session claims it. Before each start the benchmark
              waits, untimed, until the pool has a ready engine again (it refills after each
              claim); its "container started" is before the request, so it is negative.
  bare        the limit: `docker run` (Docker API: create + start) of the engine image with its
              own command (jupyter_server), publishing 8888 on the node's address; poll
              GET /api/status until it answers, POST /api/kernels, `1+1` over the kernel's
              WebSocket channel; the container is removed between starts.
  jupyterhub  JupyterHub + DockerSpawner + configurable-http-proxy (DummyAuthenticator), the
              hub and its proxy on this host, the single-user containers on the same dockerd:
              POST /hub/api/users/NAME/server with an admin (service) token, poll the user until
              the server is ready, POST /user/NAME/api/kernels through the proxy, `1+1` over
              the proxied kernel channel; the server is stopped (container removed) between
              starts.
The same client code (cdsw_agent.sessions.engine_client) creates the kernel and executes `1+1`
for bare and jupyterhub; every wait polls every 0.1 s.
Besides the time to `1+1`, each start reports when its container's process started (Docker's
State.StartedAt: what the orchestration costs before anything runs in it) and when the server
was seen ready.

What it builds: a host in a network namespace with its own dockerd (the CDSW_DOCKER role, as
tests/integration/test_sessions_swarm.py does; never a host dockerd), a one-node swarm, and the
engine image (built or reused on the test dockerd, then loaded into the host). JupyterHub is
installed on first use under ~/.cache/cdsw-bench/jupyterhub (a virtualenv with `pip install
jupyterhub dockerspawner`; configurable-http-proxy with npm into node/ there). The engine image
has no `jupyterhub` package, which jupyterhub-singleuser needs, so the hub spawns an image derived
from it that adds jupyterhub at the hub's version (pip, offline from a wheelhouse downloaded on
this host, then `docker commit`), built once and kept there as a tar. Needs root.

    .venv/bin/python benchmarks/session_start.py [--starts 10] [--warmup 1]
        [--targets workbench,warm,bare,jupyterhub]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.api_load import free_port, percentile  # noqa: E402
from benchmarks.model_serving import loadavg, stop  # noqa: E402

TARGETS = ("workbench", "warm", "bare", "jupyterhub")
LABELS = {
    "workbench": "workbench (swarm, request -> `1+1`)",
    "warm": "workbench, warm engine (claimed)",
    "bare": "bare container + kernel (docker run)",
    "jupyterhub": "JupyterHub + DockerSpawner + CHP",
}
POLL = 0.1  # seconds between readiness polls, the same for every target
HUB_CACHE = Path.home() / ".cache" / "cdsw-bench" / "jupyterhub"
HUB_USER = "bench"
BENCH_REPOSITORY = "cdsw-bench/engine-jupyterhub"


class PeerUnavailable(Exception):
    """A peer cannot be installed or started here; str() is one line saying why and what to do."""


def say(text: str) -> None:
    print(text, flush=True)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls check() every POLL seconds until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(POLL)


def started_after(container: Any, t0_wall: float) -> float:
    """Seconds from t0 (wall clock) to the container's process start, as Docker recorded it."""
    container.reload()
    stamp = container.attrs["State"]["StartedAt"]  # RFC 3339 with nanoseconds, UTC
    whole, _, frac = stamp.rstrip("Z").partition(".")
    started = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp() + float("0." + (frac or "0"))
    return started - t0_wall


def answer(ep: Any, kernel_id: str) -> str:
    """Executes `1+1` on the kernel over its WebSocket channel; returns the text/plain result."""
    from cdsw_agent.sessions.engine_client import execute

    async def run() -> List[Dict[str, Any]]:
        return [event async for event in execute(ep, kernel_id, "1+1")]

    events = asyncio.run(run())
    results = [e for e in events if e["type"] == "execute_result"]
    if not results:
        raise RuntimeError("`1+1` gave no result: %s" % events)
    return str(results[0]["data"].get("text/plain"))


# --- installing JupyterHub --------------------------------------------------------------------

def _run_step(cmd: List[str], what: str, hint: str, **kwargs: Any) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines()
                 if line.strip() and "is ignored: it is neither a file nor a directory" not in line]
        raise PeerUnavailable("%s failed (%s): %s" % (what, hint, lines[-1] if lines else
                                                       "exit status %d" % proc.returncode))
    return proc.stdout


@dataclass(frozen=True)
class HubInstall:
    venv: Path
    proxy: Path  # the configurable-http-proxy executable
    version: str  # jupyterhub's


def install_jupyterhub(cache: Path = HUB_CACHE) -> HubInstall:
    """JupyterHub and DockerSpawner in their own virtualenv, configurable-http-proxy from npm
    beside it; made on first use, each part marked done only once it is complete."""
    venv, node = cache / "venv", cache / "node"
    proxy = node / "node_modules" / ".bin" / "configurable-http-proxy"
    if not (venv / ".cdsw-bench-done").exists():
        say("jupyterhub: making its virtualenv in %s (pip install jupyterhub dockerspawner; "
            "a minute or two)" % venv)
        shutil.rmtree(venv, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        _run_step([sys.executable, "-m", "venv", str(venv)], "python -m venv",
                  "is the venv module installed?")
        _run_step([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                   "jupyterhub", "dockerspawner"], "pip install jupyterhub dockerspawner",
                  "is the package index reachable?")
        (venv / ".cdsw-bench-done").write_text("")
        say("jupyterhub: virtualenv ready")
    if not (node / ".cdsw-bench-done").exists():
        npm = shutil.which("npm")
        if not npm:
            raise PeerUnavailable("configurable-http-proxy is installed with npm, which is not "
                                  "here: apt-get install nodejs npm (scripts/ci/setup_host.sh "
                                  "installs them)")
        say("jupyterhub: npm install configurable-http-proxy into %s" % node)
        shutil.rmtree(node, ignore_errors=True)
        node.mkdir(parents=True)
        _run_step([npm, "install", "--prefix", str(node), "--no-audit", "--no-fund",
                   "--loglevel=error", "configurable-http-proxy"],
                  "npm install configurable-http-proxy", "is the npm registry reachable?")
        if not proxy.exists():
            raise PeerUnavailable("npm installed no %s; remove %s and run again" % (proxy, node))
        (node / ".cdsw-bench-done").write_text("")
        say("jupyterhub: configurable-http-proxy ready")
    version = _run_step([str(venv / "bin" / "python"), "-c",
                         "import jupyterhub; print(jupyterhub.__version__)"],
                        "importing jupyterhub", "remove %s and run again" % venv).strip()
    return HubInstall(venv, proxy, version)


def hub_image(client: Any, engine_ref: str, install: HubInstall, cache: Path = HUB_CACHE) -> str:
    """An image jupyterhub-singleuser can run in: the engine image itself when it has
    jupyterhub at the hub's version, else one derived from it that adds it (pip, offline from a
    wheelhouse made on this host), built once and kept in the cache as a tar."""
    from cdsw_agent.images import transfer
    from cdsw_agent.images.recipe import ENGINE_UID, LABEL_PREFIX, VENV
    from cdsw_agent.images.wheelhouse import platform_tags

    python = VENV + "/bin/python"
    try:
        have = client.containers.run(engine_ref, [python, "-c", "import jupyterhub; "
                                                  "print(jupyterhub.__version__)"],
                                     network_mode="none", remove=True).decode().strip()
    except Exception:  # ContainerError: no jupyterhub in the image
        have = ""
    if have == install.version:
        say("jupyterhub: the engine image has jupyterhub %s; the hub spawns it as it is" % have)
        return engine_ref
    ref = "%s:%s-jh%s" % (BENCH_REPOSITORY, engine_ref.rpartition(":")[2], install.version)
    tar = cache / "images" / (re.sub(r"[^A-Za-z0-9_.-]", "_", ref) + ".tar")
    if tar.exists():
        say("jupyterhub: loading %s (the engine image plus jupyterhub %s) from %s"
            % (ref, install.version, tar))
        transfer.load_image(client, tar)
        return ref
    labels = client.images.get(engine_ref).labels or {}
    pyver = labels.get(LABEL_PREFIX + ".python", "%d.%d" % sys.version_info[:2])
    arch = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
        platform.machine(), platform.machine())
    wheels = cache / "wheels" / ("jupyterhub-%s-py%s" % (install.version, pyver))
    say("jupyterhub: the engine image has no jupyterhub %s; building %s from it (wheels for "
        "Python %s into %s, pip install offline, docker commit)"
        % (install.version, ref, pyver, wheels))
    if not (wheels / ".cdsw-bench-done").exists():
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir(parents=True)
        short = pyver.replace(".", "")
        cmd = [str(install.venv / "bin" / "pip"), "download", "--disable-pip-version-check",
               "-q", "--only-binary=:all:", "--python-version", pyver, "--implementation",
               "cp", "--abi", "cp" + short, "--dest", str(wheels),
               "jupyterhub==" + install.version]
        for tag in platform_tags(arch):
            cmd += ["--platform", tag]
        _run_step(cmd, "pip download jupyterhub==%s" % install.version,
                  "is the package index reachable?")
        (wheels / ".cdsw-bench-done").write_text("")
    container = client.containers.run(
        engine_ref, [VENV + "/bin/pip", "install", "-q", "--disable-pip-version-check",
                     "--no-index", "--find-links", "/wheels", "jupyterhub==" + install.version],
        user="0", network_mode="none", detach=True,
        volumes={str(wheels): {"bind": "/wheels", "mode": "ro"}})
    try:
        status = container.wait(timeout=600).get("StatusCode")
        if status != 0:
            raise PeerUnavailable("pip install jupyterhub in the engine image failed: %s" % (
                container.logs().decode(errors="replace").strip().splitlines() or ["?"])[-1])
        singleuser = VENV + "/bin/jupyterhub-singleuser"
        container.commit(repository=ref.rpartition(":")[0], tag=ref.rpartition(":")[2],
                         changes=["USER %d:%d" % (ENGINE_UID, ENGINE_UID),
                                  'CMD ["%s"]' % singleuser,
                                  'LABEL cdsw-bench.jupyterhub="%s"' % install.version])
    finally:
        container.remove(force=True)
    tar.parent.mkdir(parents=True, exist_ok=True)
    for old in tar.parent.iterdir():  # a derived image per engine image: keep the current one
        old.unlink()
    transfer.save_image(client, ref, tar)
    say("jupyterhub: %s built and kept in %s" % (ref, tar))
    return ref


HUB_CONFIG = """
c = get_config()  # noqa
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = {image!r}
c.DockerSpawner.cmd = [{singleuser!r}]
c.DockerSpawner.remove = True  # each start is a new container, as for the other targets
c.DockerSpawner.use_internal_ip = False
c.DockerSpawner.host_ip = {node_ip!r}  # published on the node's address, as our sessions are
c.DockerSpawner.notebook_dir = {workdir!r}
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.pid_file = {tmp!r} + "/proxy.pid"
c.JupyterHub.hub_ip = {hub_ip!r}
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.hub_connect_ip = {hub_ip!r}  # the single-user servers reach the hub here
c.JupyterHub.db_url = "sqlite:///" + {tmp!r} + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = {tmp!r} + "/cookie_secret"
c.JupyterHub.pid_file = {tmp!r} + "/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "bench", "services": ["bench"], "scopes": [
    "admin:users", "admin:servers", "access:servers", "read:servers"]}}]
"""


class Hub:
    """A running JupyterHub: start and stop the bench user's server through its REST API."""

    def __init__(self, api: httpx.Client, proxy_port: int, token: str):
        self.api, self.proxy_port, self.token = api, proxy_port, token

    def server(self) -> Optional[Dict[str, Any]]:
        r = self.api.get("/hub/api/users/" + HUB_USER)
        r.raise_for_status()
        return (r.json().get("servers") or {}).get("")

    def stop_server(self) -> None:
        r = self.api.delete("/hub/api/users/%s/server" % HUB_USER)
        if r.status_code not in (202, 204, 400):  # 400: not running
            r.raise_for_status()
        wait_until(lambda: self.server() is None, 120, "JupyterHub to stop the server")


@contextlib.contextmanager
def jupyterhub(install: HubInstall, image: str, docker_host: str, hub_ip: str, node_ip: str,
               tmp: Path) -> Iterator[Hub]:
    from cdsw_agent.images.recipe import ENGINE_HOME, VENV

    tmp.mkdir(parents=True, exist_ok=True)
    token = os.urandom(16).hex()
    proxy_port, proxy_api_port, hub_port = free_port(), free_port(), free_port()
    (tmp / "jupyterhub_config.py").write_text(HUB_CONFIG.format(
        image=image, singleuser=VENV + "/bin/jupyterhub-singleuser", node_ip=node_ip,
        workdir=ENGINE_HOME, proxy_port=proxy_port, proxy_api_port=proxy_api_port,
        proxy=str(install.proxy), hub_ip=hub_ip, hub_port=hub_port, tmp=str(tmp), token=token))
    env = dict(os.environ, DOCKER_HOST=docker_host,
               PATH="%s:%s:%s" % (install.venv / "bin", install.proxy.parent,
                                  os.environ.get("PATH", "")))
    log = tmp / "jupyterhub.log"
    proc = subprocess.Popen([str(install.venv / "bin" / "jupyterhub"), "-f",
                             str(tmp / "jupyterhub_config.py")], cwd=str(tmp), env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    api = httpx.Client(base_url="http://127.0.0.1:%d" % proxy_port, timeout=120,
                       headers={"Authorization": "token " + token}, trust_env=False)

    def up() -> bool:
        if proc.poll() is not None:
            raise PeerUnavailable("jupyterhub exited: %s" % log.read_text()[-800:])
        try:
            return api.get("/hub/api/").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        try:
            wait_until(up, 120, "JupyterHub's API")
        except RuntimeError as e:
            raise PeerUnavailable("%s: %s" % (e, log.read_text()[-800:]))
        r = api.post("/hub/api/users/" + HUB_USER)
        if r.status_code not in (201, 409):
            raise PeerUnavailable("JupyterHub did not create user %s: %s" % (HUB_USER, r.text))
        yield Hub(api, proxy_port, token)
    finally:
        with contextlib.suppress(Exception):
            if Hub(api, proxy_port, token).server() is not None:
                Hub(api, proxy_port, token).stop_server()
        api.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the hub and the proxy it started
        stop(proc)


# --- one start of each target: (server ready s, `1+1` answered s) ---------------------------

def start_workbench(m: Any) -> Tuple[float, float, float]:
    t0, t0_wall = time.monotonic(), time.time()
    sid = m.start()["id"]

    def running() -> Optional[Dict[str, Any]]:
        s = m.client.get("/api/v1/sessions/%d" % sid).json()
        if s["status"] == "failed":
            raise RuntimeError("the session failed: %s" % s)
        return s if s["status"] == "running" else None

    try:
        wait_until(running, 180, "the session to run")
        t_ready = time.monotonic() - t0
        out = m.execute(sid, "1+1")
        total = time.monotonic() - t0
        result = [e for e in out if e.get("type") == "execute_result"]
        if not result or result[0]["data"]["text/plain"] != "2":
            raise RuntimeError("`1+1` answered %s" % out)
        engine = m.docker.containers.list(filters={"label": "io.cdsw.session=%d" % sid})
        return started_after(engine[0], t0_wall) if engine else float("nan"), t_ready, total
    finally:
        m.client.post("/api/v1/sessions/%d/stop" % sid)
        m.wait(sid, "stopped", "failed", timeout=60)


def warm_engines(m: Any, count: int) -> Any:
    """The master's warm pool, set to keep `count` engines; with count > 0 it returns once one
    is ready (untimed), with 0 once none is left."""
    from cdsw_agent.sessions.monitor import manager_for

    pool = manager_for(m.api.client.app.state.server).warm
    pool.settings = pool.settings.with_overrides(session_warm_engines=count)
    if count == 0:
        pool.clear()
        return pool

    def ready() -> bool:
        pool.tick()
        return any(e.ready for e in pool.engines())
    wait_until(ready, 120, "a warm engine")
    return pool


def start_bare(client: Any, image: str, node_ip: str, port: int) -> Tuple[float, float, float]:
    from cdsw_agent.engine.entrypoint import DIGEST_VARIABLE, token_digest
    from cdsw_agent.sessions.engine_client import Endpoint, create_kernel, ready

    token = os.urandom(16).hex()
    ep = Endpoint(node_ip, port, "/", token)
    t0, t0_wall = time.monotonic(), time.time()
    container = client.containers.run(image, detach=True,
                                      environment={DIGEST_VARIABLE: token_digest(token)},
                                      ports={"8888/tcp": (node_ip, port)})
    try:
        wait_until(lambda: ready(ep), 180, "jupyter_server in the bare container")
        t_ready = time.monotonic() - t0
        kernel = create_kernel(ep, "python3")
        if answer(ep, kernel) != "2":
            raise RuntimeError("`1+1` did not answer 2")
        total = time.monotonic() - t0
        return started_after(container, t0_wall), t_ready, total
    finally:
        container.remove(force=True)


def start_hub(hub: Hub, client: Any) -> Tuple[float, float, float]:
    from cdsw_agent.sessions.engine_client import Endpoint, create_kernel

    ep = Endpoint("127.0.0.1", hub.proxy_port, "/user/%s/" % HUB_USER, hub.token)
    t0, t0_wall = time.monotonic(), time.time()
    r = hub.api.post("/hub/api/users/%s/server" % HUB_USER)
    if r.status_code not in (201, 202):
        raise RuntimeError("JupyterHub did not start the server: %d %s" % (r.status_code, r.text))
    try:
        wait_until(lambda: (hub.server() or {}).get("ready"), 180, "the single-user server")
        t_ready = time.monotonic() - t0
        kernel = create_kernel(ep, "python3")
        if answer(ep, kernel) != "2":
            raise RuntimeError("`1+1` did not answer 2")
        total = time.monotonic() - t0
        return started_after(client.containers.get("jupyter-" + HUB_USER), t0_wall), t_ready, \
            total
    finally:
        hub.stop_server()


# --- the run ----------------------------------------------------------------------------------

def engine_image_tar(tmp: Path) -> Tuple[str, Any]:
    """The engine image (built, or reused from the test cache, on the test dockerd), saved."""
    from cdsw_agent.images import transfer
    from benchmarks.model_serving import engine_image

    say("engine image: building or reusing it on the test dockerd")
    client, image = engine_image()
    saved = transfer.save_image(client, image, tmp / "engine.tar")
    client.close()
    return image, saved


def report(rows: Dict[str, List[Tuple[float, float, float]]], args: argparse.Namespace,
           loads: List[str], skipped: Dict[str, str], failures: Dict[str, List[str]]) -> None:
    def p50(target: str) -> float:
        return percentile([r[2] for r in rows[target]], 50)

    say("")
    say("> Session start (request -> kernel answers `1+1`), same engine image, one node's "
        "dockerd in a network namespace; %d starts per target (after %d warm-up), interleaved; "
        "%s, %d cores, Python %s; load average before/after: %s / %s"
        % (args.starts, args.warmup, platform.machine(), os.cpu_count(),
           platform.python_version(), loads[0], loads[-1]))
    say("")
    say("| target | starts | container started p50 s | server ready p50 s | `1+1` p50 s "
        "| p95 s | mean s | p50 vs bare | p50 vs workbench | p50 vs warm engine |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for target in TARGETS:
        if target not in rows or not rows[target]:
            continue
        totals = [r[2] for r in rows[target]]
        ratio = {ref: "%.2f×" % (p50(target) / p50(ref)) if rows.get(ref) else "–"
                 for ref in ("bare", "workbench", "warm")}
        say("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %s | %s |" % (
            LABELS[target], len(totals), percentile([r[0] for r in rows[target]], 50),
            percentile([r[1] for r in rows[target]], 50), p50(target), percentile(totals, 95),
            statistics.mean(totals), ratio["bare"], ratio["workbench"], ratio["warm"]))
    for target, why in skipped.items():
        say("\n%s: not measured: %s" % (LABELS[target], why))
    for target, errors in failures.items():
        say("\n%s: %d failed start(s): %s" % (LABELS[target], len(errors), "; ".join(errors)))
    say("\nstarts (`1+1` answered, s): %s" % {t: [round(r[2], 2) for r in v]
                                              for t, v in rows.items()})
    say("load average per round: %s" % ", ".join(loads))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10, help="measured starts per target")
    parser.add_argument("--warmup", type=int, default=1,
                        help="starts per target before the measured ones, not counted")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated subset of %s" % ",".join(TARGETS))
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error("--targets: unknown %s; choose from %s" % (",".join(unknown) or "(none)",
                                                               ",".join(TARGETS)))
    targets = [t for t in TARGETS if t in targets]

    from cdsw_agent.sessions.monitor import manager_for
    from tests.integration.netns import Lab, available, docker_env
    from tests.integration.test_sessions_swarm import swarm_master

    reason = available()
    if reason:
        say("cannot run: %s" % reason)
        return 2
    loads = [loadavg()]
    skipped: Dict[str, str] = {}
    install: Optional[HubInstall] = None
    if "jupyterhub" in targets:
        try:
            install = install_jupyterhub()
        except PeerUnavailable as e:
            say("jupyterhub: cannot install: %s; measuring the other targets" % e)
            skipped["jupyterhub"] = str(e)
            targets.remove("jupyterhub")
    tmp = Path(tempfile.mkdtemp(prefix="cdsw-bench-sessions-"))
    image, saved = engine_image_tar(tmp)
    rows: Dict[str, List[Tuple[float, float, float]]] = {t: [] for t in targets}
    failures: Dict[str, List[str]] = {}
    try:
        with Lab(Path("/var/lib/cdsw-lab") / ("bench-" + os.urandom(3).hex())) as lab, \
                contextlib.ExitStack() as stack:
            say("node h1: dockerd in a network namespace, one-node swarm, engine image loaded")
            m = swarm_master(lab, saved.path, image, tmp / "data")
            node_ip = m.host.address
            runs: Dict[str, Callable[[], Tuple[float, float, float]]] = {}
            if "workbench" in targets:
                runs["workbench"] = lambda: (warm_engines(m, 0), start_workbench(m))[1]
            if "warm" in targets:
                runs["warm"] = lambda: (warm_engines(m, 1), start_workbench(m))[1]
            if "bare" in targets:
                bare_port = free_port()
                runs["bare"] = lambda: start_bare(m.docker, image, node_ip, bare_port)
            if install is not None:
                try:
                    hub_ref = hub_image(m.docker, image, install)
                    say("jupyterhub %s: starting the hub (proxy on 127.0.0.1, hub API on %s, "
                        "DOCKER_HOST the node's dockerd)" % (install.version, lab.prefix + ".1"))
                    hub = stack.enter_context(jupyterhub(
                        install, hub_ref, docker_env(m.host)["CDSW_DOCKER_HOST"],
                        lab.prefix + ".1", node_ip, tmp / "hub"))
                    runs["jupyterhub"] = lambda: start_hub(hub, m.docker)
                except PeerUnavailable as e:
                    say("jupyterhub: cannot start: %s; measuring the other targets" % e)
                    skipped["jupyterhub"] = str(e)
                    rows.pop("jupyterhub", None)
            order = list(runs)
            try:
                for i in range(args.warmup + args.starts):
                    k = i % len(order)
                    for target in order[k:] + order[:k]:  # rotated each round
                        try:
                            started, ready_s, total = runs[target]()
                        except Exception as e:  # one failed start is reported, not fatal
                            failures.setdefault(target, []).append(
                                "%s: %s" % (type(e).__name__, str(e)[:300]))
                            say("%s: start failed: %s" % (LABELS[target], failures[target][-1]))
                            continue
                        counted = i >= args.warmup
                        if counted:
                            rows[target].append((started, ready_s, total))
                        say("%s %d: %-38s container started %.2f s, server ready %.2f s, "
                            "`1+1` answered %.2f s" % (
                                "start" if counted else "warm-up",
                                (i - args.warmup + 1) if counted else i + 1, LABELS[target],
                                started, ready_s, total))
                    loads.append(loadavg())
            finally:
                warm_engines(m, 0)
                orch = manager_for(m.api.client.app.state.server).orchestrator
                for ref in orch.list():
                    orch.remove(ref.id)
                m.api.db.engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, args, loads, skipped, failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
