"""Nothing a collaborator writes into a project runs in the owner's engine on its own, and the
engine token reaches neither the code in it nor a page (local backend: the engine is a real
jupyter_server process; tests/integration/test_sessions_swarm.py does the same on swarm).

A Contributor plants every file an engine, jupyter_server, the kernel launcher, IPython or a
login shell would load by itself (see planted.py); the owner then starts a session, restarts its
kernel and works in a terminal, and no marker appears. Once the owner's own code imports a
project module explicitly, it runs: the payloads work, and project modules stay importable.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from cdsw_agent.sessions.monitor import manager_for

from ..conftest import Api, build_api, make_settings
from . import planted

pytestmark = pytest.mark.timeout(300)


class World:
    def __init__(self, api: Api):
        self.api = api
        self.owner = api.user("owner")
        self.contrib = api.user("contrib")
        self.c = {"owner": api.key_client(self.owner), "contrib": api.key_client(self.contrib)}
        r = self.c["owner"].post("/api/v1/projects", json={"name": "shared"})
        assert r.status_code == 201, r.text
        self.pid = r.json()["id"]
        r = self.c["owner"].put("/api/v1/projects/%d/collaborators/%d"
                                % (self.pid, self.contrib.id), json={"role": "contributor"})
        assert r.status_code == 200, r.text
        self.project_dir = Path(api.settings.projects_dir) / str(self.pid)

    def wait(self, sid: int, *states: str, timeout: float = 90) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = self.c["owner"].get("/api/v1/sessions/%d" % sid).json()
            if s["status"] in states or time.monotonic() > deadline:
                return s
            time.sleep(0.3)

    def execute(self, sid: int, code: str) -> str:
        with self.c["owner"].stream("POST", "/api/v1/sessions/%d/execute" % sid,
                                    json={"code": code}) as r:
            assert r.status_code == 200, r.read()
            events = [json.loads(line) for line in r.iter_lines() if line]
        assert events[-1]["status"] == "ok", events
        return "".join(e.get("text", "") for e in events)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    api = build_api(make_settings(tmp_path_factory.mktemp("isolation") / "data"))
    w = World(api)
    yield w
    orch = manager_for(api.client.app.state.server).orchestrator
    for ref in orch.list():
        orch.remove(ref.id)
    api.db.engine.dispose()


def plant_as_contributor(world: World, marker_dir: str) -> List[str]:
    c, base = world.c["contrib"], "/api/v1/projects/%d/files" % world.pid

    def mkdir(path: str) -> None:
        r = c.post(base + "/mkdir", json={"path": path})
        assert r.status_code == 201, (path, r.text)

    def put(path: str, content: str) -> None:
        r = c.put(base + "/content", json={"path": path, "content": content})
        assert r.status_code == 200, (path, r.text)

    return planted.plant(put, mkdir, marker_dir)


def terminal(client: Any, sid: int, command: str, until: str) -> str:
    r = client.post("/api/v1/sessions/%d/terminals" % sid)
    assert r.status_code == 201, r.text
    seen = ""
    with client.websocket_connect(r.json()["websocket"]) as ws:
        ws.send_text(json.dumps(["stdin", command]))
        deadline = time.monotonic() + 30
        while until not in seen and time.monotonic() < deadline:
            message = json.loads(ws.receive_text())
            if message[0] == "stdout":
                seen += message[1]
    assert until in seen, seen
    return seen


def test_planted_files_do_not_run_in_the_owners_engine(world: World) -> None:
    marker_dir = str(world.project_dir)  # a local engine sees the project at its host path
    plant_as_contributor(world, marker_dir)
    r = world.c["owner"].put("/api/v1/projects/%d/env/PYTHONSTARTUP" % world.pid,
                             json={"value": marker_dir + "/.pythonrc.py"})
    assert r.status_code == 200, r.text

    r = world.c["owner"].post("/api/v1/projects/%d/sessions" % world.pid, json={})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert world.wait(sid, "running", "failed")["status"] == "running"
    # the kernel runs in the project and sees its files
    out = world.execute(sid, "import os, sys\nprint(os.getcwd())\nprint(os.environ['HOME'])\n"
                             "print(sys.flags.isolated)")
    cwd, home, isolated = out.split()
    assert cwd == marker_dir and isolated == "1"
    assert not home.startswith(marker_dir) and Path(home).is_dir()  # the owner's own home
    r = world.c["owner"].post("/api/v1/sessions/%d/restart" % sid)
    assert r.status_code == 200, r.text
    world.execute(sid, "1")
    terminal(world.c["owner"], sid, "echo in-$((6*7)) $HOME; pwd\r", "in-42")

    ran = planted.markers([p.name for p in world.project_dir.iterdir()])
    assert ran == [], "planted files ran in the owner's engine: %s" % ran

    # the control: the owner's own code imports a project module explicitly, and it runs
    world.execute(sid, "import owner_helper")
    assert planted.markers([p.name for p in world.project_dir.iterdir()]) == ["explicit-import"]
    # a project module cannot shadow what the image installed: the project comes last
    out = world.execute(sid, "import os, sys, traitlets\nprint(traitlets.__file__)\n"
                             "print(sys.path.index(os.getcwd()) == len(sys.path) - 1)")
    assert not out.split()[0].startswith(marker_dir) and out.split()[1] == "True", out


def test_the_engine_token_reaches_no_kernel_terminal_or_page(world: World) -> None:
    r = world.c["owner"].post("/api/v1/projects/%d/sessions" % world.pid, json={})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert world.wait(sid, "running", "failed")["status"] == "running"
    _, ep = manager_for(world.api.client.app.state.server).running(sid)
    kernel_code, terminal_command = planted.token_checks(ep.token)

    assert world.execute(sid, kernel_code) == "[]\nFalse\n"
    r = world.c["owner"].post("/api/v1/sessions/%d/restart" % sid)
    assert r.status_code == 200, r.text
    assert world.execute(sid, kernel_code) == "[]\nFalse\n"
    seen = terminal(world.c["owner"], sid, terminal_command, "done-42")
    assert "\n0\r" in seen.replace("\r\n", "\n\r") or "0\r\ndone-42" in seen, seen
    # the server's own environment, which a kernel could read in /proc, holds no token either
    pid_code = ("import os\nppid = os.getppid()\n"
                "print(%r[::-1] in open('/proc/%%d/environ' %% ppid).read())" % ep.token[::-1])
    assert world.execute(sid, pid_code) == "False\n"
    # the hunt: every process's environment and command line, and every file of the engine's
    # home, its private directory and the project (a local engine runs as the master's user,
    # so process memory is no boundary there; the swarm test hunts through memory too)
    home = world.execute(sid, "import os\nprint(os.environ['HOME'])").strip()
    private = Path(world.api.settings.data_dir) / "sessions" / str(sid) / "engine"
    kernel_hunt, terminal_hunt = planted.token_hunt(
        ep.token, [home, str(private), str(world.project_dir)], memory=False)
    hunt = json.loads(world.execute(sid, kernel_hunt))
    assert hunt["found"] == [] and hunt["files"] > 0, hunt
    seen = terminal(world.c["owner"], sid, terminal_hunt, "done-42")
    assert "0\r\n0\r\ndone-42" in seen, seen

    # what jupyter_server sends a browser (the router passes bodies through unchanged)
    with httpx.Client(trust_env=False, timeout=10) as http:
        pages = {}
        for path in ("lab", "tree", "login", "api/status", "api/me", "no-such-page"):
            page = http.get(ep.http + path, headers=ep.headers)
            pages[path] = page
            assert ep.token not in page.text, path
            # no login cookie (only jupyter_server's _xsrf cookie, which is no credential)
            cookies = page.headers.get_list("set-cookie")
            assert all(c.startswith("_xsrf=") for c in cookies), (path, cookies)
            assert 'data-jupyter-api-token="' not in page.text.replace(
                'data-jupyter-api-token=""', ""), path
        assert pages["api/status"].status_code == 200
        if "jupyterlab" in sys.modules or pages["lab"].status_code == 200:
            assert '"token": ""' in pages["lab"].text
        # the token is accepted in the Authorization header only
        assert http.get(ep.http + "api/status").status_code == 403
        assert http.get(ep.http + "api/status", params={"token": ep.token}).status_code == 403
