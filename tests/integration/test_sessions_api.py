"""Sessions through the API on the local backend: the engine (jupyter_server + ipykernel) runs
as a real process. Start, execute with ordered streamed outputs (stdout, stderr, HTML, a
matplotlib PNG, a result, an error traceback), interrupt, restart, a terminal over the router's
WebSocket proxy, jupyter_server over the HTTP proxy, identity and sharing, stop and the
transcript afterwards, idle and maximum-duration timeouts, an engine crash, and a master
restart that re-adopts running sessions."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect

from cdsw_agent.sessions.monitor import manager_for
from cdsw_agent.store.models import AuditEvent, utcnow

from ..conftest import Api, build_api, make_settings

pytestmark = pytest.mark.timeout(300)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeClock:
    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += dt.timedelta(**delta)


class World:
    def __init__(self, api: Api):
        self.api = api
        self.owner = api.user("owner")
        self.contrib = api.user("contrib")
        self.viewer = api.user("viewer")
        self.admin = api.user("siteadmin", admin=True)
        self.stranger = api.user("stranger")
        self.c = {name: api.key_client(getattr(self, name))
                  for name in ("owner", "contrib", "viewer", "admin", "stranger")}
        r = self.c["owner"].post("/api/v1/projects", json={"name": "analysis"})
        assert r.status_code == 201, r.text
        self.pid = r.json()["id"]
        for user, role in ((self.contrib, "contributor"), (self.viewer, "viewer")):
            r = self.c["owner"].put("/api/v1/projects/%d/collaborators/%d" % (self.pid, user.id),
                                    json={"role": role})
            assert r.status_code == 200, r.text

    @property
    def manager(self) -> Any:
        return manager_for(self.api.client.app.state.server)

    def start(self, who: str = "owner", **body: Any) -> Dict[str, Any]:
        r = self.c[who].post("/api/v1/projects/%d/sessions" % self.pid, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def get(self, sid: int, who: str = "owner") -> Dict[str, Any]:
        r = self.c[who].get("/api/v1/sessions/%d" % sid)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, sid: int, *states: str, timeout: float = 90) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.get(sid)
            if s["status"] in states:
                return s
            time.sleep(0.3)
        raise AssertionError("session %d never reached %s: %s" % (sid, states, s))

    def running(self, **body: Any) -> int:
        s = self.start(**body)
        assert self.wait(s["id"], "running", "failed")["status"] == "running", self.get(s["id"])
        return s["id"]

    def execute(self, sid: int, code: str, who: str = "owner") -> List[Dict[str, Any]]:
        with self.c[who].stream("POST", "/api/v1/sessions/%d/execute" % sid,
                                json={"code": code}) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("application/x-ndjson")
            return [json.loads(line) for line in r.iter_lines() if line]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = make_settings(tmp_path_factory.mktemp("sessions") / "data",
                             session_idle_minutes=30, session_max_minutes=120)
    api = build_api(settings)
    w = World(api)
    yield w
    orch = w.manager.orchestrator
    for ref in orch.list():
        orch.remove(ref.id)
    api.db.engine.dispose()


@pytest.fixture(scope="module")
def session(world: World) -> int:
    return world.running()


def test_execute_streams_every_kind_of_output_in_order(world: World, session: int) -> None:
    code = "\n".join([
        "import sys",
        "from IPython.display import HTML, display",
        "import matplotlib.pyplot as plt",
        "print('one', flush=True)",
        "print('two', file=sys.stderr, flush=True)",
        "display(HTML('<table><tr><td>cell</td></tr></table>'))",
        "plt.plot([1, 2, 3], [3, 1, 2]); plt.show()",
        "print('three')",
        "6 * 7",
    ])
    events = world.execute(session, code)
    kinds = [(e["type"], e.get("name")) for e in events]
    assert kinds == [("stream", "stdout"), ("stream", "stderr"), ("display_data", None),
                     ("display_data", None), ("stream", "stdout"), ("execute_result", None),
                     ("result", None)], kinds
    assert events[0]["text"] == "one\n" and events[1]["text"] == "two\n"
    assert "<td>cell</td>" in events[2]["data"]["text/html"]
    assert base64.b64decode(events[3]["data"]["image/png"]).startswith(PNG_MAGIC)
    assert events[5]["data"]["text/plain"] == "42"
    assert events[6] == {"type": "result", "status": "ok",
                         "execution_count": events[5]["execution_count"]}

    failed = world.execute(session, "def f():\n    return 1 / 0\nprint('before')\nf()")
    assert [e["type"] for e in failed] == ["stream", "error", "result"]
    error = failed[1]
    assert error["ename"] == "ZeroDivisionError" and error["evalue"] == "division by zero"
    assert any("return 1 / 0" in line or "1\x1b" in line for line in error["traceback"])
    assert len(error["traceback"]) >= 3 and failed[2]["status"] == "error"


def test_the_engine_starts_the_kernel_the_master_adopts(world: World, session: int) -> None:
    """The engine starts the session's kernel before it listens (engine/server.py); the master
    adopts it instead of creating a second one."""
    import httpx

    from cdsw_agent.engine.entrypoint import PRESTART_VARIABLE

    row, ep = world.manager.running(session)
    r = httpx.get(ep.http + "api/kernels", headers={"Authorization": "token " + ep.token})
    assert r.status_code == 200, r.text
    assert [(k["id"], k["name"]) for k in r.json()] == [(row.kernel_id, "python3")]
    # the variable stays with the server: kernels do not inherit it
    out = world.execute(session, "import os; print(os.environ.get(%r))" % PRESTART_VARIABLE)
    assert out[0]["text"] == "None\n", out


def test_environment_and_project_files(world: World, session: int) -> None:
    (world.api.settings.projects_dir / str(world.pid) / "data.csv").write_text("a,b\n1,2\n")
    out = world.execute(session, "import os\nprint(os.environ['HADOOP_USER_NAME'], "
                                 "os.environ['CDSW_PROJECT'], os.environ['CDSW_ENGINE_ID'], "
                                 "'CDSW_ENGINE_TOKEN' in os.environ)\n"
                                 "print(open('data.csv').read().splitlines()[1])")
    text = "".join(e.get("text", "") for e in out)
    assert text.startswith("owner analysis session-%d-" % session), text
    assert text.endswith("False\n1,2\n"), text  # the engine token stays out of kernels


def test_interrupt_stops_a_running_execution(world: World, session: int) -> None:
    result: Dict[str, Any] = {}

    def run() -> None:
        result["events"] = world.execute(session, "import time\nprint('sleeping', flush=True)\n"
                                                  "time.sleep(120)\nprint('woke')")

    t = threading.Thread(target=run)
    t.start()
    # again every 2 s: on a loaded machine the first interrupt may come before the cell runs
    deadline = time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline:
        time.sleep(2)
        r = world.c["owner"].post("/api/v1/sessions/%d/interrupt" % session)
        assert r.status_code == 200, r.text
        t.join(2)
    assert not t.is_alive(), "the execution did not end after the interrupt"
    events = result["events"]
    assert events[0] == {"type": "stream", "name": "stdout", "text": "sleeping\n"}
    assert events[1]["type"] == "error" and events[1]["ename"] == "KeyboardInterrupt"
    assert not any("woke" in e.get("text", "") for e in events)


def test_restart_clears_the_kernel_state(world: World, session: int) -> None:
    assert world.execute(session, "x = 41\nx + 1")[0]["data"]["text/plain"] == "42"
    r = world.c["owner"].post("/api/v1/sessions/%d/restart" % session)
    assert r.status_code == 200, r.text
    after = world.execute(session, "x")
    assert after[0]["type"] == "error" and after[0]["ename"] == "NameError"


def test_tab_completion_comes_from_the_kernel(world: World, session: int) -> None:
    world.execute(session, "cdsw_completion_target = 1\nimport collections")
    url = "/api/v1/sessions/%d/complete" % session
    r = world.c["owner"].post(url, json={"code": "x = cdsw_completion_ta"})
    assert r.status_code == 200, r.text
    assert r.json() == {"matches": ["cdsw_completion_target"], "cursor_start": 4,
                        "cursor_end": 22}
    code = "collections.Ordered + 1"  # the cursor in the middle of the line
    r = world.c["owner"].post(url, json={"code": code, "cursor_pos": len("collections.Ordered")})
    assert r.status_code == 200 and "OrderedDict" in r.json()["matches"], r.text
    assert (r.json()["cursor_start"], r.json()["cursor_end"]) == (len("collections."),
                                                                   len("collections.Ordered"))
    r = world.c["owner"].post(url, json={"code": "ab", "cursor_pos": 3})
    assert r.status_code == 422 and "cursor_pos" in r.json()["error"], r.text


def test_terminal_round_trip_through_the_websocket_proxy(world: World, session: int) -> None:
    r = world.c["owner"].post("/api/v1/sessions/%d/terminals" % session)
    assert r.status_code == 201, r.text
    ws_path = r.json()["websocket"]
    # the workbench's terminal tab: its own route with the workbench sign-in, not the engine's
    assert ws_path == "/api/v1/sessions/%d/terminals/%s/websocket" % (session, r.json()["name"])
    with world.c["owner"].websocket_connect(ws_path) as ws:
        ws.send_text(json.dumps(["stdin", "echo result-$((6*7)) $HADOOP_USER_NAME\r"]))
        seen = ""
        deadline = time.monotonic() + 30
        while "result-42 owner" not in seen and time.monotonic() < deadline:
            message = json.loads(ws.receive_text())
            if message[0] == "stdout":
                seen += message[1]
        assert "result-42 owner" in seen, seen


def test_http_proxy_reaches_jupyter_server_and_strips_credentials(world: World,
                                                                  session: int) -> None:
    base = "/api/v1/sessions/%d/engine/" % session
    r = world.c["owner"].get(base + "api/status")
    assert r.status_code == 200 and "kernels" in r.json(), r.text
    r = world.c["owner"].put(base + "api/contents/made-through-proxy.txt",
                             json={"type": "file", "format": "text", "content": "hello"})
    assert r.status_code == 201, r.text
    assert (world.api.settings.projects_dir / str(world.pid) / "made-through-proxy.txt") \
        .read_text() == "hello"
    assert "set-cookie" not in r.headers
    # without the master's credentials the engine is not reachable through the router
    anon = TestClient(world.api.client.app)
    assert anon.get(base + "api/status").status_code == 401
    # the local engine runs the master's Python, which has JupyterLab (the test extra)
    assert world.get(session)["jupyterlab_url"] == base + "lab"


def test_only_the_owner_reaches_the_session_unless_shared(world: World, session: int) -> None:
    base = "/api/v1/sessions/%d" % session
    # project viewers and collaborators see metadata; strangers do not even see the session
    listing = world.c["viewer"].get("/api/v1/projects/%d/sessions" % world.pid)
    assert listing.status_code == 200 and session in [s["id"] for s in listing.json()]
    assert world.get(session, "viewer")["your_access"] is None
    assert world.c["stranger"].get(base).status_code == 404
    assert world.c["stranger"].post(base + "/execute", json={"code": "1"}).status_code == 404
    # the collaborator and the site admin are refused everything that acts as the owner
    for who in ("contrib", "admin", "viewer"):
        c = world.c[who]
        for method, path, body in (("POST", "/execute", {"code": "1"}), ("POST", "/interrupt", None),
                                   ("POST", "/restart", None), ("POST", "/terminals", None),
                                   ("GET", "/engine/api/status", None), ("GET", "/log", None),
                                   ("PUT", "/shares/%d" % world.contrib.id, {"mode": "view"})):
            r = c.request(method, base + path, json=body)
            assert r.status_code == 403, (who, path, r.status_code, r.text)
            assert "owner" in r.json()["error"]
        with pytest.raises(WebSocketDisconnect) as refused:
            with c.websocket_connect(base + "/engine/api/kernels/x/channels"):
                pass
        assert refused.value.code == 1008
    assert world.c["contrib"].post(base + "/stop").status_code == 403

    # view share: the console log, not the kernel
    r = world.c["owner"].put(base + "/shares/%d" % world.contrib.id, json={"mode": "view"})
    assert r.status_code == 200 and r.json()["mode"] == "view", r.text
    assert world.c["contrib"].get(base + "/log").status_code == 200
    r = world.c["contrib"].post(base + "/execute", json={"code": "1"})
    assert r.status_code == 403 and "view only" in r.json()["error"]
    # interactive share: executes too
    world.c["owner"].put(base + "/shares/%d" % world.contrib.id, json={"mode": "interactive"})
    out = world.execute(session, "print('shared')", who="contrib")
    assert out[0]["text"] == "shared\n"
    assert world.c["contrib"].put(base + "/shares/%d" % world.viewer.id,
                                  json={"mode": "view"}).status_code == 403  # owner only
    # a stranger to the project cannot be given access; the owner needs none
    r = world.c["owner"].put(base + "/shares/%d" % world.stranger.id, json={"mode": "view"})
    assert r.status_code == 422 and "collaborator" in r.json()["error"]
    # revoked: refused again; both changes audited
    assert world.c["owner"].delete(base + "/shares/%d" % world.contrib.id).status_code == 204
    assert world.c["contrib"].post(base + "/execute", json={"code": "1"}).status_code == 403
    assert world.c["owner"].get(base + "/shares").json() == []
    with world.api.db.session() as s:
        actions = [(e.action, e.detail.get("mode")) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action.like("session.%share"))
            .order_by(AuditEvent.id))]
    assert actions == [("session.share", "view"), ("session.share", "interactive"),
                       ("session.unshare", None)]
    log = world.c["owner"].get(base + "/log").text
    assert '"user":"contrib"' in log  # the transcript says who ran what


def test_start_refusals(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    base = "/api/v1/projects/%d/sessions" % world.pid
    r = world.c["viewer"].post(base, json={})
    assert r.status_code == 403 and "operator" in r.json()["error"]
    # the local engine offers R only where the host has IRkernel (the test set-up installs it)
    from cdsw_agent.sessions import launch

    monkeypatch.setattr(launch, "local_r_kernel", lambda: False)
    r = world.c["owner"].post(base, json={"kernel": "r"})
    assert r.status_code == 422 and "no R kernel" in r.json()["error"], r.text
    r = world.c["owner"].post(base, json={"engine_image_id": 999})
    assert r.status_code == 422 and "no engine image 999" in r.json()["error"]
    r = world.c["owner"].post(base, json={"kernel": "cobol"})
    assert r.status_code == 422
    assert world.c["stranger"].post(base, json={}).status_code == 404


def test_stop_keeps_the_transcript_readable(world: World, session: int) -> None:
    world.execute(session, "print('last words')")
    r = world.c["owner"].post("/api/v1/sessions/%d/stop" % session)
    assert r.status_code == 200, r.text
    stopped = world.wait(session, "stopped")
    assert stopped["reason"] == "stopped by owner" and stopped["finished_at"]
    r = world.c["owner"].post("/api/v1/sessions/%d/execute" % session, json={"code": "1"})
    assert r.status_code == 409 and "ended" in r.json()["error"]
    r = world.c["owner"].get("/api/v1/sessions/%d/log" % session)
    assert r.status_code == 200 and r.headers["x-session-status"] == "stopped"
    entries = [json.loads(line) for line in r.text.splitlines()]
    inputs = [e["code"] for e in entries if e["kind"] == "input"]
    assert "print('last words')" in inputs and inputs[0].startswith("import sys")
    assert {"kind": "output", "type": "stream", "name": "stdout", "text": "last words\n"} \
        in [{k: v for k, v in e.items() if k != "at"} for e in entries]
    assert entries[-1]["event"] == "stopped"
    assert any(e.get("type") == "display_data" and "image/png" in e["data"] for e in entries)
    token_file = Path(world.api.settings.data_dir) / "session-secret"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert world.c["owner"].post("/api/v1/sessions/%d/stop" % session).status_code == 409


def test_idle_and_maximum_duration_timeouts(world: World) -> None:
    clock = FakeClock()
    manager = world.manager
    manager.clock = clock
    try:
        idle = world.running()
        clock.advance(minutes=20)
        world.execute(idle, "1")  # activity: the idle time counts from here
        clock.advance(minutes=20)
        manager.sync()
        assert world.get(idle)["status"] == "running"
        clock.advance(minutes=11)
        manager.sync()
        s = world.wait(idle, "stopped")
        assert s["reason"] == "stopped after 30 minutes without activity"

        longest = world.running()
        for _ in range(5):  # busy all along, still stopped at the maximum
            clock.advance(minutes=25)
            world.execute(longest, "1")
            manager.sync()
        s = world.wait(longest, "stopped")
        assert s["reason"] == "stopped after running its maximum of 120 minutes"
    finally:
        manager.clock = utcnow


def test_engine_crash_ends_the_session_as_failed(world: World) -> None:
    sid = world.running()
    # the kernel kills its own jupyter_server: the engine dies under the session
    world.execute(sid, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    s = world.wait(sid, "failed", "stopped")
    assert s["status"] == "failed"
    assert s["reason"] == "the engine was killed by SIGKILL", s["reason"]
    entries = world.c["owner"].get("/api/v1/sessions/%d/log" % sid).text
    assert '"event":"failed"' in entries


def test_master_restart_readopts_running_sessions(world: World) -> None:
    kept = world.running()
    doomed = world.running()
    world.execute(kept, "survivor = 'still here'")
    # a second master on the same data dir (the first one "died"): nothing is killed
    settings = world.api.settings
    second = build_api(settings)
    try:
        owner = second.key_client(world.owner)
        workload = world.manager.orchestrator
        with world.api.db.session() as s:
            from cdsw_agent.store.sessions_models import EngineSession
            doomed_workload = s.get(EngineSession, doomed).workload_id
        workload.remove(doomed_workload)  # its engine vanished while no master watched
        manager_for(second.client.app.state.server).sync()
        r = owner.get("/api/v1/sessions/%d" % kept)
        assert r.json()["status"] == "running", r.text
        with owner.stream("POST", "/api/v1/sessions/%d/execute" % kept,
                          json={"code": "survivor"}) as r:
            events = [json.loads(line) for line in r.iter_lines() if line]
        assert events[0]["data"]["text/plain"] == "'still here'"
        failed = owner.get("/api/v1/sessions/%d" % doomed).json()
        assert failed["status"] == "failed" and "disappeared" in failed["reason"]
        assert owner.post("/api/v1/sessions/%d/stop" % kept).json()["status"] == "stopped"
    finally:
        second.db.engine.dispose()
