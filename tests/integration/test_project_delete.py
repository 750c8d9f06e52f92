"""Deleting a project stops every engine it has running: a job run, an experiment, a session
and a model replica (local backend, real processes, the master served by uvicorn so its
lifespan runs the job scheduler, the session monitor and the model supervisor)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from cdsw_agent.orchestrators import FINAL_STATES
from cdsw_agent.server.scheduler import _orchestrator

from ..conftest import build_api, make_settings
from .test_models_api import Master

pytestmark = pytest.mark.timeout(300)


def wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out waiting for " + what)


def ok(r: httpx.Response, code: int) -> Any:
    assert r.status_code == code, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                      r.status_code, r.text)
    return r.json() if r.content else None


def test_deleting_a_project_stops_all_its_engines(tmp_path: Path) -> None:
    api = build_api(make_settings(tmp_path / "data"))
    master = Master(api)
    owner = api.user("owner")
    c = httpx.Client(base_url=master.url, timeout=60,
                     headers={"Authorization": "Bearer " + api.api_key(owner)})
    orch = _orchestrator(master.app.state.server)
    try:
        pid = ok(c.post("/api/v1/projects", json={"name": "doomed"}), 201)["id"]
        files = api.settings.projects_dir / str(pid)
        (files / "sleep.py").write_text("import time\ntime.sleep(600)\n")
        (files / "model.py").write_text("def predict(args):\n    return args\n")
        base = "/api/v1/projects/%d" % pid
        job = ok(c.post(base + "/jobs", json={"name": "long", "script": "sleep.py"}), 201)
        ok(c.post(base + "/jobs/%d/runs" % job["id"]), 201)
        ok(c.post(base + "/experiments", json={"script": "sleep.py"}), 201)
        ok(c.post(base + "/sessions", json={}), 201)
        model = ok(c.post(base + "/models", json={"name": "echo", "file": "model.py",
                                                  "function": "predict"}), 201)
        model_id = model["id"]
        build = ok(c.post(base + "/models/%d/builds" % model_id), 201)
        wait(lambda: ok(c.get(base + "/models/%d/builds/%d" % (model_id, build["id"])), 200)
             ["status"] == "succeeded", 60, "the model build")
        ok(c.post(base + "/models/%d/deployment" % model_id, json={"replicas": 1}), 201)

        def live() -> list:
            return [ref for ref in orch.list() if not orch.status(ref.id).final]
        # a job run, an experiment, a session and a model replica
        wait(lambda: len(live()) == 4, 90, "four engines (have %s)" % [r.name for r in live()])

        ok(c.delete(base), 204)
        wait(lambda: not live(), 60, "every engine of the project to stop")
        assert all(orch.status(ref.id).state in FINAL_STATES for ref in orch.list())
        assert not files.exists()
    finally:
        c.close()
        master.stop()
        for ref in orch.list():
            orch.remove(ref.id)
        api.db.engine.dispose()
