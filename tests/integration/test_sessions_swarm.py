"""Sessions on the swarm backend with the real engine image, driven through the master's API.

h1 is a network namespace with its own dockerd (the CDSW_DOCKER role) and a one-node swarm; the
engine image is built once on the shared test dockerd and loaded into h1. The master (the app,
in this process) reaches each engine at its node's address on the host-mode published port,
exactly as it would an engine on a worker. `swarm_master` is reused by
benchmarks/session_start.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from cdsw_agent.images import transfer
from cdsw_agent.roles import swarm as swarm_mgr

from ..conftest import Api, build_api, make_settings
from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .netns import Lab, available, docker_env, start_docker_role

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]
CDSW = str(Path(sys.executable).with_name("cdsw"))


@dataclass
class SwarmMaster:
    api: Api
    client: Any  # the API-key TestClient of the site admin, who owns the project
    project_id: int
    image_id: int
    docker: Any  # docker client of h1

    def start(self, **body: Any) -> Dict[str, Any]:
        r = self.client.post("/api/v1/projects/%d/sessions" % self.project_id, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def wait(self, sid: int, *states: str, timeout: float = 180) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = self.client.get("/api/v1/sessions/%d" % sid).json()
            if s["status"] in states or time.monotonic() > deadline:
                return s
            time.sleep(0.2)

    def execute(self, sid: int, code: str) -> list:
        with self.client.stream("POST", "/api/v1/sessions/%d/execute" % sid,
                                json={"code": code}) as r:
            assert r.status_code == 200, r.read()
            return [json.loads(line) for line in r.iter_lines() if line]


def swarm_master(lab: Lab, engine_tar: Path, engine_ref: str, data_dir: Path) -> SwarmMaster:
    """h1 with dockerd, a one-node swarm and the engine image; the master app on top."""
    h1 = lab.add_host("h1")
    _, docker_client = start_docker_role(h1, CDSW)
    assert transfer.load_image(docker_client, engine_tar) == [engine_ref]
    settings = make_settings(data_dir, orchestrator="swarm",
                             docker_host=docker_env(h1)["CDSW_DOCKER_HOST"],
                             master_host=h1.address)
    swarm_mgr.ensure_manager(docker_client, settings)
    api = build_api(settings)
    admin = api.user("admin", admin=True)
    client = api.key_client(admin)
    repository, tag = engine_ref.rsplit(":", 1)
    r = client.post("/api/v1/engine-images", json={
        "repository": repository, "tag": tag, "kernels": ["python3"],
        "editors": ["workbench", "terminal"], "is_default": True})
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    r = client.post("/api/v1/projects", json={"name": "on-swarm"})
    assert r.status_code == 201, r.text
    return SwarmMaster(api, client, r.json()["id"], image_id, docker_client)


@pytest.fixture(scope="module")
def master(engine_image: str, docker_engine: Any,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmMaster]:
    reason = available()
    if reason:
        pytest.skip(reason)
    saved = transfer.save_image(docker_engine.client, engine_image,
                                tmp_path_factory.mktemp("engine") / "engine.tar")
    with Lab(Path("/var/lib/cdsw-lab") / ("sess-" + os.urandom(3).hex())) as lab:
        m = swarm_master(lab, saved.path, engine_image, tmp_path_factory.mktemp("swarm") / "data")
        try:
            yield m
        finally:
            from cdsw_agent.sessions.monitor import manager_for

            orch = manager_for(m.api.client.app.state.server).orchestrator
            for ref in orch.list():
                orch.remove(ref.id)
            m.api.db.engine.dispose()


def test_session_on_swarm_end_to_end(master: SwarmMaster) -> None:
    s = master.start()
    running = master.wait(s["id"], "running", "failed")
    assert running["status"] == "running", running
    assert running["node"] == "h1"
    sid = s["id"]

    out = master.execute(sid, "print('hello from', __import__('os').environ['HADOOP_USER_NAME'])"
                              "\n1+1")
    assert out[0] == {"type": "stream", "name": "stdout", "text": "hello from admin\n"}
    assert out[1]["type"] == "execute_result" and out[1]["data"]["text/plain"] == "2"
    assert out[2]["status"] == "ok"
    # the engine runs as the image's user, in the project folder
    who = master.execute(sid, "import os\nprint(os.getuid(), os.getcwd())")
    assert who[0]["text"] == "8536 /home/cdsw\n", who

    r = master.client.post("/api/v1/sessions/%d/terminals" % sid)
    assert r.status_code == 201, r.text
    with master.client.websocket_connect(r.json()["websocket"]) as ws:
        ws.send_text(json.dumps(["stdin", "echo swarm-$((20+22))\r"]))
        seen, deadline = "", time.monotonic() + 30
        while "swarm-42" not in seen and time.monotonic() < deadline:
            message = json.loads(ws.receive_text())
            if message[0] == "stdout":
                seen += message[1]
    assert "swarm-42" in seen, seen

    r = master.client.post("/api/v1/sessions/%d/stop" % sid)
    assert r.status_code == 200, r.text
    stopped = master.wait(sid, "stopped", "failed", timeout=60)
    assert stopped["status"] == "stopped" and stopped["reason"] == "stopped by admin", stopped
    services = master.docker.services.list(filters={"label": "io.cdsw.session=%d" % sid})
    assert services == [], "the stopped engine's service was not removed"
    log = master.client.get("/api/v1/sessions/%d/log" % sid).text
    assert "hello from admin" in log


def test_missing_image_fails_with_one_clear_reason(master: SwarmMaster) -> None:
    r = master.client.post("/api/v1/engine-images", json={"repository": "cdsw/engine",
                                                          "tag": "not-built-here"})
    assert r.status_code == 201, r.text
    s = master.start(engine_image_id=r.json()["id"])
    failed = master.wait(s["id"], "failed", "running", timeout=120)
    assert failed["status"] == "failed", failed
    assert failed["reason"] == (
        "could not start the engine: the image cdsw/engine:not-built-here is not present on "
        "node h1; build or distribute it (cdsw images build) or choose another image"), failed
    assert "No such image" not in failed["reason"]  # Docker's words go to the log only


def test_orphan_sweep_removes_the_engine_of_a_session_that_is_gone(master: SwarmMaster) -> None:
    from cdsw_agent.sessions.monitor import manager_for
    from cdsw_agent.store.sessions_models import EngineSession

    s = master.start()
    assert master.wait(s["id"], "running", "failed")["status"] == "running"
    label = {"label": "io.cdsw.session=%d" % s["id"]}
    assert len(master.docker.services.list(filters=label)) == 1
    with master.api.db.session() as db:  # as when its project is deleted under it
        db.delete(db.get(EngineSession, s["id"]))
    manager = manager_for(master.api.client.app.state.server)
    [removed] = manager.remove_orphans()
    assert master.docker.services.list(filters=label) == [], removed
