"""A master with several HTTP workers (master_http_workers=2, server/http_workers.py): the
controller runs here (in a thread, as `cdsw role master start` runs it in its main thread), the
two workers are real spawned processes accepting on one real port, on the local backend.

Everything goes through the workers over HTTP: a session started, used and stopped (the
controller launches; the worker proxies the kernel), a job run, a model built, deployed and
called over many connections, whose monitoring counts and /metrics then add up exactly across
both workers; a call's own errors come back as in one process; the controller's socket refuses
anyone without the workers' token; a killed worker is replaced and nothing stops answering.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List
from urllib.parse import urlsplit

import httpx
import pytest

from cdsw_agent.server import controller
from cdsw_agent.server.app import create_app
from cdsw_agent.server.http_workers import ControlledMaster

from ..conftest import Api, build_api, make_settings
from .test_models_api import MODEL_PY, Models, free_port
from .test_models_api import \
    test_redeploy_replaces_replicas_without_refusing_requests as redeploy_under_load

pytestmark = pytest.mark.timeout(600)


class Cluster:
    def __init__(self, api: Api, master: ControlledMaster, url: str) -> None:
        self.api, self.master, self.url = api, master, url
        self.owner = api.user("owner")
        self.headers = {"Authorization": "Bearer " + api.api_key(self.owner)}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """On a new connection each time, so that both workers take some."""
        return httpx.request(method, self.url + path, headers=self.headers, timeout=60, **kwargs)

    def ok(self, r: httpx.Response, code: int = 200) -> Any:
        assert r.status_code == code, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                          r.status_code, r.text)
        return r.json()


def wait(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("workers"), master_http_workers=2,
                             http_port=port, engine_port=free_port())
    api = build_api(settings)
    app = create_app(settings, api.db)
    master = ControlledMaster(app, settings, "127.0.0.1", port, log_config=None,
                              timeout_graceful_shutdown=5)
    thread = threading.Thread(target=master.run, daemon=True)
    thread.start()
    url = "http://127.0.0.1:%d" % port

    def answers() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait(answers, 120, "the workers to answer")
    c = Cluster(api, master, url)
    try:
        yield c
    finally:
        master.stop()
        thread.join(60)
        assert not thread.is_alive(), "the controller did not stop"
        assert master.workers.pids() == []
        api.db.engine.dispose()


@pytest.fixture()
def asked(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The names of the calls the workers made to the controller (but their reports)."""
    names: List[str] = []
    for name, fn in list(controller.CALLS.items()):
        def spy(state: Any, _name: str = name, _fn: Any = fn, **kwargs: Any) -> Any:
            if _name != "worker.report":
                names.append(_name)
            return _fn(state, **kwargs)
        monkeypatch.setitem(controller.CALLS, name, spy)
    return names


def test_sessions_jobs_and_errors_through_the_workers(cluster: Cluster, asked: List[str]) -> None:
    c = cluster
    pid = c.ok(c.request("POST", "/api/v1/projects", json={"name": "w"}), 201)["id"]
    project_dir = Path(c.api.settings.projects_dir) / str(pid)
    (project_dir / "hello.py").write_text("print('hello from', 6 * 7)\n")

    # a session: launched by the controller, proxied by whichever worker answers
    s = c.ok(c.request("POST", "/api/v1/projects/%d/sessions" % pid, json={}), 201)
    wait(lambda: c.ok(c.request("GET", "/api/v1/sessions/%d" % s["id"]))["status"] == "running",
         120, "the session to run")
    r = c.request("POST", "/api/v1/sessions/%d/execute" % s["id"], json={"code": "1+1"})
    events = [json.loads(line) for line in r.text.splitlines() if line]
    assert events[-1]["status"] == "ok" and any(
        e.get("data", {}).get("text/plain") == "2" for e in events), events
    # a JupyterLab launch link works once, whichever worker each use reaches
    for _ in range(6):
        access = c.ok(c.request("POST", "/api/v1/sessions/%d/engine-access" % s["id"],
                                json={"path": "api/status"}))
        url = urlsplit(access["url"])
        local = "http://127.0.0.1:%d%s?%s" % (url.port, url.path, url.query)
        uses = [httpx.get(local, headers={"Host": url.netloc}).status_code for _ in range(3)]
        assert uses == [303, 401, 401], uses
    c.ok(c.request("POST", "/api/v1/sessions/%d/stop" % s["id"]))
    wait(lambda: c.ok(c.request("GET", "/api/v1/sessions/%d" % s["id"]))["status"] == "stopped",
         60, "the session to stop")

    # a job run, started by the controller, read back through the workers
    job = c.ok(c.request("POST", "/api/v1/projects/%d/jobs" % pid,
                         json={"name": "hello", "script": "hello.py"}), 201)
    run = c.ok(c.request("POST", "/api/v1/projects/%d/jobs/%d/runs" % (pid, job["id"])), 201)
    done = wait(lambda: (lambda x: x if x["status"] not in ("queued", "running")
                         else None)(c.ok(c.request("GET", "/api/v1/projects/%d/jobs/%d/runs/%d"
                                                   % (pid, job["id"], run["id"])))),
                120, "the run to end")
    assert done["status"] == "succeeded", done
    log = c.request("GET", "/api/v1/projects/%d/jobs/%d/runs/%d/log" % (pid, job["id"], run["id"]))
    assert "hello from 42" in log.text, log.text

    # a call's own errors come back as the same answer as in one process
    r = c.request("POST", "/api/v1/projects/%d/sessions" % pid, json={"engine_image_id": 999})
    assert r.status_code == 422 and "no engine image 999" in r.json()["error"], r.text
    r = c.request("POST", "/api/v1/projects/%d/jobs/%d/runs/%d/stop" % (pid, job["id"], run["id"]))
    assert r.status_code == 409 and "already ended" in r.json()["error"], r.text
    # every launch and stop was the controller's
    assert {"session.start", "session.sync", "session.stop", "job.start_run",
            "job.stop_run"} <= set(asked), asked


def test_model_counts_add_up_across_workers(cluster: Cluster, monkeypatch: pytest.MonkeyPatch,
                                            asked: List[str]) -> None:
    c = cluster
    reported: Dict[str, int] = {}
    report = controller.CALLS["worker.report"]

    def counting(state: Any, worker: str, counts: Dict[str, Any], **rest: Any) -> Any:
        reported[worker] = reported.get(worker, 0) + sum(v["requests"] for v in counts.values())
        return report(state, worker=worker, counts=counts, **rest)
    monkeypatch.setitem(controller.CALLS, "worker.report", counting)

    pid = c.ok(c.request("POST", "/api/v1/projects", json={"name": "m"}), 201)["id"]
    (Path(c.api.settings.projects_dir) / str(pid) / "model.py").write_text(MODEL_PY)
    base = "/api/v1/projects/%d/models" % pid
    model = c.ok(c.request("POST", base, json={"name": "adder", "file": "model.py",
                                               "function": "predict"}), 201)
    key, mid = model["access_key"], model["id"]
    build = c.ok(c.request("POST", "%s/%d/builds" % (base, mid)), 201)
    wait(lambda: c.ok(c.request("GET", "%s/%d/builds/%d" % (base, mid, build["id"])))["status"]
         == "succeeded", 120, "the build")
    c.ok(c.request("POST", "%s/%d/deployment" % (base, mid), json={"replicas": 1}), 201)
    wait(lambda: [r for r in (c.ok(c.request("GET", "%s/%d" % (base, mid)))["deployment"] or
                              {}).get("replica_states", []) if r["state"] == "ready"],
         120, "a ready replica")

    calls = 60
    before = _model_2xx(c)
    for i in range(calls):  # each on its own connection: the kernel hands them to both workers
        r = httpx.post(c.url + "/model", json={"accessKey": key, "request": {"a": i, "b": 1}})
        assert r.status_code == 200 and r.json()["response"]["sum"] == i + 1, r.text

    def counted() -> Any:
        replicas = c.ok(c.request("GET", "%s/%d" % (base, mid)))["deployment"]["replica_states"]
        return replicas if sum(r.get("requests") or 0 for r in replicas) == calls else None
    replicas = wait(counted, 10, "the monitoring page to count every call")
    assert sum(r["successes"] for r in replicas) == calls
    assert sum(r["outstanding"] for r in replicas) == 0
    assert len([w for w, n in reported.items() if n]) == 2, reported  # both workers served
    assert sum(reported.values()) == calls
    wait(lambda: _model_2xx(c) - before == calls, 10, "/metrics to count every call")
    assert {"model.publish", "model.build", "model.sync_deployment", "metrics.text"} \
        <= set(asked), asked

    # a revoked key is refused by every worker once the API call that revoked it returns
    new = c.ok(c.request("POST", "%s/%d/access-keys" % (base, mid), json={"revoke_others": True}),
               201)["access_key"]
    for i in range(20):
        r = httpx.post(c.url + "/model", json={"accessKey": key, "request": {"a": i, "b": 1}})
        assert r.status_code == 401, (i, r.text)
    key = new

    # a worker killed in the middle of everything is replaced; the other one goes on answering
    victim = c.master.workers.pids()[0]
    os.kill(victim, signal.SIGKILL)
    for i in range(20):
        r = httpx.post(c.url + "/model", json={"accessKey": key, "request": {"a": i, "b": 1}})
        assert r.status_code == 200, r.text
    wait(lambda: len(c.master.workers.pids()) == 2 and victim not in c.master.workers.pids(),
         60, "a new worker")
    r = c.request("DELETE", "%s/%d" % (base, mid))
    assert r.status_code == 204, r.text


def test_an_approved_promotion_rebuilds_and_rolls_the_targets_model(
        cluster: Cluster, asked: List[str]) -> None:
    """A promotion approved through a worker: its deployed model on the target is rebuilt from
    the promoted files and rolled by the controller (which builds and waits for the builds)."""
    c = cluster
    root, alice, carol = (c.api.user("admin%d" % os.getpid(), admin=True),
                          c.api.user("alice%d" % os.getpid()), c.api.user("carol%d" % os.getpid()))

    def as_(user: Any) -> Callable[..., httpx.Response]:
        headers = {"Authorization": "Bearer " + c.api.api_key(user)}
        return lambda method, path, **kw: httpx.request(method, c.url + path, headers=headers,
                                                         timeout=60, **kw)
    admin, a, r = as_(root), as_(alice), as_(carol)
    # the target stays on the default cluster: the local backend's one node is that cluster's
    c.ok(admin("POST", "/api/v1/clusters", json={"name": "DEV", "kind": "dev",
                                                   "requires_grant": False}), 201)

    def project(call: Callable[..., httpx.Response], name: str, cluster_name: str,
                model_py: str) -> str:
        pid = c.ok(call("POST", "/api/v1/projects", json={"name": name}), 201)["id"]
        base = "/api/v1/projects/%d" % pid
        if cluster_name != "default":
            c.ok(call("PUT", base + "/cluster", json={"cluster": cluster_name}))
        c.ok(call("PUT", base + "/files/content", json={"path": "model.py", "content": model_py}))
        return base
    promoted = MODEL_PY.replace('"sum": args["a"] + args["b"]', '"sum": args["a"] + args["b"] + 100')
    src = project(a, "churn", "DEV", promoted)
    dst = project(r, "churn-prod", "default", MODEL_PY)
    c.ok(r("PUT", dst + "/collaborators/%d" % alice.id, json={"role": "contributor"}))
    definition = {"name": "adder", "file": "model.py", "function": "predict"}
    c.ok(a("POST", src + "/models", json=definition), 201)

    # the target's model, deployed from its own files
    model = c.ok(r("POST", dst + "/models", json=definition), 201)
    mbase, key = "%s/models/%d" % (dst, model["id"]), model["access_key"]
    build = c.ok(r("POST", mbase + "/builds"), 201)
    wait(lambda: c.ok(r("GET", "%s/builds/%d" % (mbase, build["id"])))["status"] == "succeeded",
         120, "the target's build")
    c.ok(r("POST", mbase + "/deployment", json={"replicas": 1}), 201)

    def answer() -> Any:
        x = httpx.post(c.url + "/model", json={"accessKey": key, "request": {"a": 1, "b": 1}})
        return x.json()["response"]["sum"] if x.status_code == 200 else None
    wait(lambda: answer() == 2, 120, "the target's model to answer")

    promotion = c.ok(a("POST", src + "/promotions",
                       json={"target_project_id": int(dst.rsplit("/", 1)[1])}), 201)
    assert "model.py" in promotion["diff"]["files"]["changed"], promotion["diff"]
    c.ok(r("POST", "%s/promotions/%d/approve" % (dst, promotion["id"]), json={}))
    wait(lambda: answer() == 102, 180, "the promoted model to be rebuilt and rolled")
    assert "promotion.rebuild" in asked, asked
    builds = c.ok(r("GET", mbase + "/builds"))
    assert len(builds) == 2 and all(b["status"] == "succeeded" for b in builds), builds
    assert r("DELETE", mbase).status_code == 204


def _model_2xx(c: Cluster) -> int:
    text = c.request("GET", "/metrics").text
    found = re.search(r'cdsw_http_requests_total\{handler="model",code="2xx"\} (\d+)', text)
    return int(found.group(1)) if found else 0


def test_the_controller_socket_is_the_masters_and_wants_the_token(cluster: Cluster) -> None:
    path = controller.socket_path(cluster.api.settings.data_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    for auth in ("", "Authorization: Bearer wrong\r\n"):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            body = b'{"project_id": 1, "user_id": 1, "kernel": "python3", "image_id": null, ' \
                   b'"profile_id": null}'
            s.sendall(b"POST /call/session.start HTTP/1.1\r\nHost: x\r\n" + auth.encode()
                      + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 401"), answer


def test_a_redeploy_under_load_refuses_no_call_on_any_worker(cluster: Cluster) -> None:
    """test_models_api's rolling redeploy with four callers on keep-alive connections spread
    over both workers: the old replicas drain only once no worker can still pick them."""
    c = cluster
    pid = c.ok(c.request("POST", "/api/v1/projects", json={"name": "redeploy"}), 201)["id"]
    client = httpx.Client(base_url=c.url, headers=c.headers, timeout=60)
    m = Models(c.api, type("Front", (), {"url": c.url})(), client, pid)  # type: ignore[arg-type]
    try:
        redeploy_under_load(m)
    finally:
        for model in client.get(m.base).json():
            client.delete("%s/%d" % (m.base, model["id"]), timeout=120)
        client.close()


def test_the_role_process_stops_its_workers_and_a_killed_one_leaves_none(tmp_path: Path) -> None:
    """`cdsw role master start` as the managers run it: SIGTERM stops the workers with it
    (exit 0); killed with SIGKILL, its workers end too, so the next master gets the port."""
    import subprocess
    import sys

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    (tmp_path / "none").write_text("")
    env.update(CDSW_DATA_DIR=str(tmp_path / "data"), CDSW_HTTP_PORT=str(port),
               CDSW_BIND_ADDRESS="127.0.0.1", CDSW_CONF=str(tmp_path / "none"),
               CDSW_PROPERTIES=str(tmp_path / "none"), CDSW_ORCHESTRATOR="local",
               CDSW_ENGINE_PORT=str(free_port()), CDSW_MASTER_HTTP_WORKERS="2",
               CDSW_STORAGE_BACKEND="local")
    cdsw = [sys.executable, "-m", "cdsw_agent.cli.main"]
    subprocess.run(cdsw + ["db", "upgrade"], env=env, check=True, capture_output=True)

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(cdsw + ["role", "master", "start"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: _answers("http://127.0.0.1:%d" % port), 120, "the master")
        return proc

    def workers_of(pid: int) -> List[int]:
        out = subprocess.run(["pgrep", "-P", str(pid), "-f", "multiprocessing"],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def gone(pids: List[int]) -> bool:
        return not [p for p in pids if Path("/proc/%d" % p).exists()]

    first = start()
    workers = workers_of(first.pid)
    assert len(workers) >= 2, workers
    first.kill()
    first.wait(10)
    wait(lambda: gone(workers), 30, "the killed master's workers to end")
    second = start()  # the port is free again
    workers = workers_of(second.pid)
    second.terminate()
    assert second.wait(60) == 0
    wait(lambda: gone(workers), 10, "the stopped master's workers to end")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
