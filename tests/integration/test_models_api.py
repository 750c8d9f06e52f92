"""Models through the master's HTTP API on the local backend (replicas are processes): build,
deploy, call with the access key, balancing, failing functions, scaling, rolling redeploy under
load, stopping, and a master restart that re-adopts the replicas.

The master is a real uvicorn server on loopback (its lifespan starts the model supervisor), so
calls to POST /model go through the same pooled async router as in production.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from cdsw_agent.server.app import create_app
from cdsw_agent.store.db import Database
from cdsw_agent.store.models import AuditEvent
from cdsw_agent.store.models_models import ModelReplica

from ..conftest import Api, build_api

MODEL_PY = """
import json, os
HERE = os.path.dirname(os.path.abspath(__file__))

def predict(args):
    return {"sum": args["a"] + args["b"], "replica": os.environ["CDSW_MODEL_REPLICA_ID"],
            "built": open(os.path.join(HERE, "built.txt")).read().strip()
                     if os.path.exists(os.path.join(HERE, "built.txt")) else None}

def version(args):
    return VERSION

def boom(args):
    raise ValueError("bad input %r" % (args,))

VERSION = "v1"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Master:
    """create_app served by uvicorn in a thread, as `cdsw role master start` serves it."""

    def __init__(self, api: Api):
        self.api = api
        self.port = free_port()
        self.app = create_app(api.settings, api.db)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "master did not start"
            time.sleep(0.02)
        self.url = "http://127.0.0.1:%d" % self.port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@dataclass
class Models:
    api: Api
    master: Master
    client: httpx.Client  # the model's owner, with an API key
    project_id: int

    @property
    def base(self) -> str:
        return "/api/v1/projects/%d/models" % self.project_id

    def file(self, name: str, text: str) -> None:
        path = self.api.settings.projects_dir / str(self.project_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def ok(self, r: httpx.Response, code: int = 200) -> Any:
        assert r.status_code == code, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                          r.status_code, r.text)
        return r.json() if r.headers.get("content-type", "").startswith("application/json") \
            else r.text

    def create(self, **body: Any) -> Dict[str, Any]:
        return self.ok(self.client.post(self.base, json=body), 201)

    def get(self, model_id: int) -> Dict[str, Any]:
        return self.ok(self.client.get("%s/%d" % (self.base, model_id)))

    def build(self, model_id: int, status: str = "succeeded") -> Dict[str, Any]:
        b = self.ok(self.client.post("%s/%d/builds" % (self.base, model_id)), 201)
        url = "%s/%d/builds/%d" % (self.base, model_id, b["id"])
        done = wait(lambda: (lambda x: x if x["status"] not in ("queued", "building") else None)(
            # a swarm build copies the engine image per layer where Docker falls back to vfs
            # (a fresh container-based machine: 60 s was not enough there)
            self.ok(self.client.get(url))), 300, "build %d" % b["id"])
        assert done["status"] == status, (done, self.client.get(url + "/log").text)
        return done

    def deploy(self, model_id: int, **body: Any) -> Dict[str, Any]:
        return self.ok(self.client.post("%s/%d/deployment" % (self.base, model_id), json=body),
                       201)

    def action(self, model_id: int, what: str, **body: Any) -> Dict[str, Any]:
        return self.ok(self.client.post("%s/%d/deployment/%s" % (self.base, model_id, what),
                                        json=body if what != "stop" else None))

    def wait_deployment(self, model_id: int, check: Callable[[Dict[str, Any]], bool],
                        what: str, timeout: float = 60) -> Dict[str, Any]:
        return wait(lambda: (lambda m: m if m["deployment"] and check(m["deployment"]) else None)(
            self.get(model_id)), timeout, what, on_timeout=lambda: self.get(model_id))

    def call(self, key: Optional[str], request: Any) -> httpx.Response:
        body: Dict[str, Any] = {"request": request}
        if key is not None:
            body["accessKey"] = key
        return httpx.post(self.master.url + "/model", json=body, timeout=30)


def wait(probe: Callable[[], Any], timeout: float, what: str,
         on_timeout: Optional[Callable[[], Any]] = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s: %s"
                                 % (what, on_timeout() if on_timeout else value))
        time.sleep(0.1)


def start_models(api: Api, user: Any = None, project_id: Optional[int] = None) -> Models:
    master = Master(api)
    user = user or api.user()
    client = httpx.Client(base_url=master.url, timeout=30,
                          headers={"Authorization": "Bearer " + api.api_key(user)})
    if project_id is None:
        project_id = client.post("/api/v1/projects", json={"name": "models"}).json()["id"]
    m = Models(api, master, client, project_id)
    m.user = user  # type: ignore[attr-defined]
    return m


def stop_all(m: Models) -> None:
    """Stops what the test left deployed (replica processes must not outlive it)."""
    for model in m.client.get(m.base).json():
        # removing a swarm model's services and images took over 5 s on a fresh machine
        m.client.delete("%s/%d" % (m.base, model["id"]), timeout=120)
    m.master.stop()
    m.client.close()


@pytest.fixture
def models(api: Api) -> Iterator[Models]:
    m = start_models(api)
    yield m
    stop_all(m)


def ready(n: int, build_id: Optional[int] = None) -> Callable[[Dict[str, Any]], bool]:
    def check(d: Dict[str, Any]) -> bool:
        live = [r for r in d["replica_states"] if r["state"] in ("starting", "ready", "draining")]
        return d["status"] == "deployed" and len(live) == n and all(
            r["state"] == "ready" and (build_id is None or r["build_id"] == build_id)
            for r in live)
    return check


# --- the whole life of a model --------------------------------------------------------------

def test_build_deploy_call_balance_fail_scale_stop(models: Models) -> None:
    m = models
    m.file("model.py", MODEL_PY)
    m.file("cdsw-build.sh", "echo building the model\necho made-by-build > built.txt\n")
    created = m.create(name="adder", file="model.py", function="predict",
                       description="adds", example_input={"a": 1, "b": 2})
    key = created["access_key"]
    assert key.startswith("cdswm_") and created["deployment"] is None
    assert "access_key" not in m.get(created["id"])  # shown once only
    model_id = created["id"]

    build = m.build(model_id)
    log = m.ok(m.client.get("%s/%d/builds/%d/log" % (m.base, model_id, build["id"])))
    assert "building the model" in log and "build succeeded" in log, log
    # the build is a snapshot: changing the project now does not change what is served
    m.file("cdsw-build.sh", "exit 1\n")

    dep = m.deploy(model_id, replicas=2)
    assert dep["replicas"] == 2 and dep["build_id"] == build["id"]
    assert m.client.post("%s/%d/deployment" % (m.base, model_id),
                         json={"replicas": 1}).status_code == 409  # one deployment at a time
    model = m.wait_deployment(model_id, ready(2), "2 ready replicas")

    r = m.call(key, {"a": 2, "b": 40})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["success"] is True and answer["response"]["sum"] == 42
    assert answer["response"]["built"] == "made-by-build"

    # refused: no key, wrong key; neither reaches a replica
    for bad in (None, "", "cdswm_wrong"):
        r = m.call(bad, {"a": 1, "b": 1})
        assert r.status_code == 401 and r.json()["success"] is False, r.text
    r = m.client.post("/model", json={"accessKey": key})  # no request: the function gets None
    assert r.status_code == 500 and r.json()["error"].startswith("TypeError"), r.text
    # ... as is a malformed body
    r = httpx.post(m.master.url + "/model", json={"accessKey": key, "extra": 1})
    assert r.status_code == 422
    # curl -d '{...}' sends no JSON content type: CDSW accepted it, and so do we; its legacy
    # address answers the same
    raw = json.dumps({"accessKey": key, "request": {"a": 1, "b": 2}})
    r = httpx.post(m.master.url + "/model", content=raw,
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["response"]["sum"] == 3, r.text
    r = httpx.post(m.master.url + "/api/altus-ds-1/models/call-model", content=raw)
    assert r.status_code == 200 and r.json()["response"]["sum"] == 3, r.text
    r = httpx.post(m.master.url + "/model", content=b"accessKey=x")
    assert r.status_code == 422 and "not JSON" in r.json()["error"], r.text

    # balancing: every replica gets traffic
    served = {m.call(key, {"a": i, "b": 0}).json()["response"]["replica"] for i in range(20)}
    replica_ids = {str(x["id"]) for x in model["deployment"]["replica_states"]}
    assert served == replica_ids, (served, replica_ids)
    counts = m.get(model_id)["deployment"]["replica_states"]
    assert sum(c["requests"] for c in counts) == 24 and all(c["requests"] >= 5 for c in counts)
    assert sum(c["failures"] for c in counts) == 1  # the call without a request
    assert all(c["latency_ms_p50"] for c in counts), counts

    # a function that raises: an error answer, a failure counted, the replica keeps serving
    m.ok(m.client.patch("%s/%d" % (m.base, model_id), json={"function": "boom"}))
    boom = m.build(model_id, status="failed")  # cdsw-build.sh now exits 1
    assert "exited with code 1" in boom["reason"]
    m.file("cdsw-build.sh", "echo ok > built.txt\n")
    boom = m.build(model_id)
    m.action(model_id, "redeploy", build_id=boom["id"])
    m.wait_deployment(model_id, ready(2, boom["id"]), "the boom build")
    r = m.call(key, {"x": 1})
    assert r.status_code == 500 and r.json() == {
        "success": False, "error": "ValueError: bad input {'x': 1}"}, r.text
    counts = m.get(model_id)["deployment"]["replica_states"]
    assert sum(c["failures"] for c in counts) == 1
    failed_replica = [c for c in counts if c["failures"] == 1][0]
    replica_log = m.ok(m.client.get("%s/%d/replicas/%d/log" % (m.base, model_id,
                                                             failed_replica["id"])))
    assert "ValueError: bad input" in replica_log and "Traceback" in replica_log
    assert m.call(key, {"x": 2}).status_code == 500  # still answering

    # back to the adder; scale up and down
    m.action(model_id, "redeploy", build_id=build["id"])
    m.wait_deployment(model_id, ready(2, build["id"]), "back to the adder")
    d = m.action(model_id, "scale", replicas=3)
    assert d["replicas"] == 3
    m.wait_deployment(model_id, ready(3), "3 replicas")
    r = m.client.post("%s/%d/deployment/scale" % (m.base, model_id), json={"replicas": 10})
    assert r.status_code == 422 and "1 to 9" in r.json()["error"]
    m.action(model_id, "scale", replicas=1)
    model = m.wait_deployment(model_id, ready(1), "1 replica")
    assert m.call(key, {"a": 1, "b": 1}).json()["response"]["sum"] == 2

    # access keys: a rotated key replaces the old one at once
    new = m.ok(m.client.post("%s/%d/access-keys" % (m.base, model_id),
                             json={"revoke_others": True}), 201)
    assert m.call(key, {"a": 1, "b": 1}).status_code == 401
    assert m.call(new["access_key"], {"a": 1, "b": 1}).status_code == 200
    keys = m.ok(m.client.get("%s/%d/access-keys" % (m.base, model_id)))
    assert [k["revoked_at"] is not None for k in keys] == [True, False]
    assert all("access_key" not in k and "key_hash" not in k for k in keys)

    # viewers read, only contributors deploy
    viewer = m.api.user()
    m.ok(m.client.put("/api/v1/projects/%d/collaborators/%d" % (m.project_id, viewer.id),
                      json={"role": "viewer"}))
    vc = httpx.Client(base_url=m.master.url, headers={
        "Authorization": "Bearer " + m.api.api_key(viewer)})
    assert vc.get("%s/%d" % (m.base, model_id)).status_code == 200
    assert vc.post("%s/%d/deployment/stop" % (m.base, model_id)).status_code == 403
    assert vc.post("%s/%d/builds" % (m.base, model_id)).status_code == 403

    # stop: callers are refused cleanly, replicas are gone
    d = m.action(model_id, "stop")
    assert d["status"] == "stopped"
    m.wait_deployment(model_id, lambda d: not d["replica_states"], "replicas to stop")
    r = m.call(new["access_key"], {"a": 1, "b": 1})
    assert r.status_code == 503 and "no ready replica" in r.json()["error"]
    with m.api.db.session() as s:
        assert {r.state for r in s.scalars(select(ModelReplica))} == {"stopped"}
        actions = [e.action for e in s.scalars(select(AuditEvent)
                                               .where(AuditEvent.action.like("model.%")))]
    assert actions.count("model.redeploy") == 2 and "model.stop" in actions
    assert "model.access_key.create" in actions


def test_missing_function_and_import_error_are_reported(models: Models) -> None:
    m = models
    m.file("model.py", MODEL_PY)
    m.file("broken.py", "import no_such_module_here\n")
    missing = m.create(name="missing", file="model.py", function="nope")
    broken = m.create(name="broken", file="broken.py", function="predict")
    for created, text in ((missing, "model.py has no function nope"),
                          (broken, "ModuleNotFoundError")):
        build = m.build(created["id"])
        m.deploy(created["id"], replicas=1, build_id=build["id"])
        model = m.wait_deployment(created["id"], lambda d: d["status"] == "failed",
                                  "a failed deployment")
        dep = model["deployment"]
        assert text in dep["reason"], dep
        [replica] = dep["replica_states"]
        assert replica["state"] == "failed" and text in replica["message"], replica
        log = m.ok(m.client.get("%s/%d/replicas/%d/log" % (m.base, created["id"],
                                                         replica["id"])))
        assert "cannot serve" in log and text in log, log
        r = m.call(created["access_key"], {})
        assert r.status_code == 503 and r.json()["success"] is False
        time.sleep(1.0)  # not retried in a loop
        assert len(m.get(created["id"])["deployment"]["replica_states"]) == 1
    # bad input: one clear error each
    r = m.client.post(m.base, json={"name": "x", "file": "../etc/passwd", "function": "f"})
    assert r.status_code == 422 and "inside the project" in r.json()["error"]
    r = m.client.post(m.base, json={"name": "x", "file": "nothere.py", "function": "f"})
    assert r.status_code == 422 and "not found" in r.json()["error"]
    r = m.client.post(m.base, json={"name": "x", "file": "model.py", "function": "1f"})
    assert r.status_code == 422
    r = m.client.post(m.base, json={"name": "missing", "file": "model.py", "function": "f"})
    assert r.status_code == 409


def test_redeploy_replaces_replicas_without_refusing_requests(models: Models) -> None:
    m = models
    m.file("model.py", MODEL_PY)
    created = m.create(name="versioned", file="model.py", function="version")
    key = created["access_key"]
    v1 = m.build(created["id"])
    m.deploy(created["id"], replicas=2)
    first = m.wait_deployment(created["id"], ready(2), "v1")["deployment"]["replica_states"]
    m.file("model.py", MODEL_PY.replace('VERSION = "v1"', 'VERSION = "v2"'))
    v2 = m.build(created["id"])

    answers: List[Any] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                r = c.post(m.master.url + "/model", json={"accessKey": key, "request": {}})
                answers.append((r.status_code, r.json()))

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        d = m.action(created["id"], "redeploy")  # the latest good build: v2
        assert d["build_id"] == v2["id"]
        m.wait_deployment(created["id"], ready(2, v2["id"]), "v2 everywhere")
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    bad = [a for a in answers if a[0] != 200 or not a[1]["success"]]
    assert not bad, bad[:5]
    versions = [a[1]["response"] for a in answers]
    assert versions[0] == "v1" and versions[-1] == "v2" and len(versions) > 50, len(versions)
    # v1 is never served again once v2 took over everywhere
    assert "v1" not in versions[versions.index("v2") + len(versions) // 2:]
    with m.api.db.session() as s:
        old = {r.id: r for r in s.scalars(select(ModelReplica).where(
            ModelReplica.id.in_([x["id"] for x in first])))}
    assert {r.state for r in old.values()} == {"stopped"}
    assert all(r.message.startswith("replaced by build %d" % v2["id"]) for r in old.values())
    assert v1["id"] != v2["id"]


def test_master_restart_readopts_running_replicas(api: Api) -> None:
    m = start_models(api)
    try:
        m.file("model.py", MODEL_PY)
        created = m.create(name="durable", file="model.py", function="predict")
        m.build(created["id"])
        m.deploy(created["id"], replicas=2)
        before = m.wait_deployment(created["id"], ready(2), "2 replicas")
        for _ in range(4):
            assert m.call(created["access_key"], {"a": 1, "b": 2}).status_code == 200
    finally:
        m.master.stop()  # the master goes; the replicas stay
        m.client.close()
    api2 = build_api(api.settings, api.db.url)
    m2 = start_models(api2, user=m.user, project_id=m.project_id)  # type: ignore[attr-defined]
    try:
        r = m2.call(created["access_key"], {"a": 1, "b": 2})
        assert r.status_code == 200 and r.json()["response"]["sum"] == 3, r.text
        after = m2.get(created["id"])["deployment"]
        assert after["status"] == "deployed"
        ids = lambda d: sorted(x["id"] for x in d["replica_states"])  # noqa: E731
        assert ids(after) == ids(before["deployment"])  # adopted, not relaunched
        assert sum(x["requests"] for x in after["replica_states"]) == 1  # counts restart at 0
    finally:
        stop_all(m2)
        api2.db.engine.dispose()


def test_models_schema_matches_the_models_and_goes_back(db_url: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from cdsw_agent.store.models import Base

    db = Database(db_url)
    try:
        db.upgrade()
        with db.engine.connect() as c:
            diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}),
                                    Base.metadata)
        assert [d for d in diff if "model" in repr(d)] == []
        command.downgrade(db._alembic_config(), "0004")
        with db.engine.connect() as c:
            assert not {"models", "model_builds", "model_deployments", "model_replicas",
                        "model_access_keys"} & set(db.engine.dialect.get_table_names(c))
    finally:
        db.engine.dispose()


def test_project_folder_stays_untouched_by_builds(models: Models) -> None:
    """A build runs in its snapshot: cdsw-build.sh cannot write into the live project."""
    m = models
    m.file("model.py", MODEL_PY)
    m.file("cdsw-build.sh", "echo x > built.txt\n")
    created = m.create(name="snap", file="model.py", function="predict")
    m.build(created["id"])
    assert not (Path(m.api.settings.projects_dir) / str(m.project_id) / "built.txt").exists()
