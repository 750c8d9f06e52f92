"""Session data safety on the local backend (real jupyter_server processes): the engine is
launched only once its "starting" row is committed; a launch the orchestrator refuses leaves a
failed session that says why in a sentence; a master that died between launching and recording
the engine has the engine adopted, or the session failed once the launch grace is over; the
orphan sweep removes engines no live session owns; a session's folder (transcript, the engine's
runtime dir with its cookie secret) goes when the session is deleted, its engine's private
files when the engine ends."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from sqlalchemy import select

from cdsw_agent.orchestrators import OrchestratorError, WorkloadRef
from cdsw_agent.orchestrators.local import group_members
from cdsw_agent.sessions import manager as session_manager
from cdsw_agent.sessions.monitor import manager_for
from cdsw_agent.store.models import utcnow
from cdsw_agent.store.sessions_models import EngineSession

from ..conftest import Api, build_api, make_settings

pytestmark = pytest.mark.timeout(300)


class Lab:
    def __init__(self, api: Api):
        self.api = api
        self.owner = api.user("owner")
        self.client = api.key_client(self.owner)
        self.pid = self.project("lifecycle")

    def project(self, name: str) -> int:
        r = self.client.post("/api/v1/projects", json={"name": name})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    @property
    def manager(self) -> Any:
        return manager_for(self.api.client.app.state.server)

    def start(self, pid: int = 0) -> Any:
        return self.client.post("/api/v1/projects/%d/sessions" % (pid or self.pid), json={})

    def get(self, sid: int) -> Dict[str, Any]:
        r = self.client.get("/api/v1/sessions/%d" % sid)
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

    def running(self, pid: int = 0) -> int:
        r = self.start(pid)
        assert r.status_code == 201, r.text
        s = self.wait(r.json()["id"], "running", "failed")
        assert s["status"] == "running", s
        return int(s["id"])

    def row(self, sid: int) -> Any:
        with self.api.db.session() as s:
            session = s.get(EngineSession, sid)
            if session is not None:
                s.expunge(session)
            return session

    def folder(self, sid: int) -> Path:
        return Path(self.api.settings.data_dir) / "sessions" / str(sid)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    api = build_api(make_settings(tmp_path_factory.mktemp("lifecycle") / "data"))
    lab = Lab(api)
    yield lab
    orch = lab.manager.orchestrator
    for ref in orch.list():
        orch.remove(ref.id)
    api.db.engine.dispose()


def _engine_pgid(lab: Lab, workload_id: str) -> int:
    return int((lab.manager.orchestrator.root / workload_id / "pid").read_text())


def test_the_engine_is_launched_once_its_row_is_committed(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    orchestrator = lab.manager.orchestrator
    launch = orchestrator.launch
    seen: List[Any] = []

    def watching(spec: Any) -> WorkloadRef:
        # another connection, as another master thread: the row must already be there
        with lab.api.db.session() as s:
            seen.append(s.scalar(select(EngineSession.status).where(
                EngineSession.name == spec.name)))
        return launch(spec)

    monkeypatch.setattr(orchestrator, "launch", watching)
    r = lab.start()
    assert r.status_code == 201, r.text
    assert seen == ["starting"], "the engine was launched inside the transaction that records it"
    monkeypatch.undo()
    assert lab.wait(r.json()["id"], "running", "failed")["status"] == "running"
    lab.client.post("/api/v1/sessions/%d/stop" % r.json()["id"])


def test_a_refused_launch_leaves_a_failed_session_saying_why(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(spec: Any) -> WorkloadRef:
        raise OrchestratorError("the swarm refused it (the master's log has Docker's words)")

    monkeypatch.setattr(lab.manager.orchestrator, "launch", refuse)
    r = lab.start()
    assert r.status_code == 503, r.text
    reason = "cannot start the engine: the swarm refused it (the master's log has Docker's words)"
    assert r.json()["error"] == reason
    [failed] = [s for s in lab.client.get("/api/v1/projects/%d/sessions" % lab.pid).json()
                if s["status"] == "failed" and s["reason"] == reason]
    assert failed["finished_at"]


def test_an_engine_launched_by_a_master_that_died_is_adopted(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # the master dies after the launch, before it records the workload id
    monkeypatch.setattr(lab.manager, "_record_launch", lambda session_id, workload_id: None)
    r = lab.start()
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert lab.row(sid).workload_id is None
    monkeypatch.undo()
    s = lab.wait(sid, "running", "failed")
    assert s["status"] == "running", s
    [ref] = lab.manager.orchestrator.list({"io.cdsw.session": str(sid)})
    assert lab.row(sid).workload_id == ref.id
    lab.client.post("/api/v1/sessions/%d/stop" % sid)


def test_a_row_whose_engine_never_started_fails_after_the_grace(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # the master died before the launch itself: a "starting" row and no engine anywhere
    monkeypatch.setattr(lab.manager.orchestrator, "launch",
                        lambda spec: WorkloadRef("never-" + spec.name, spec.name))
    monkeypatch.setattr(lab.manager, "_record_launch", lambda session_id, workload_id: None)
    r = lab.start()
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    monkeypatch.undo()
    lab.manager.sync()
    assert lab.get(sid)["status"] == "starting"  # its launch may still be under way elsewhere
    monkeypatch.setattr(lab.manager, "clock",
                        lambda: utcnow() + session_manager.LAUNCH_GRACE + dt.timedelta(seconds=5))
    lab.manager.sync()
    s = lab.get(sid)
    assert (s["status"], s["reason"]) == ("failed", session_manager.NEVER_STARTED), s


def test_orphan_sweep_removes_engines_and_folders_of_sessions_that_are_gone(lab: Lab) -> None:
    sid = lab.running()
    workload_id = lab.row(sid).workload_id
    pgid = _engine_pgid(lab, workload_id)
    assert group_members(pgid) and lab.folder(sid).is_dir()
    with lab.api.db.session() as s:  # gone under its engine (a project deleted by hand, ...)
        s.delete(s.get(EngineSession, sid))
    assert lab.manager.remove_orphans() == [workload_id]
    assert group_members(pgid) == [], "the engine of a deleted session still runs"
    assert lab.manager.orchestrator.list({"io.cdsw.session": str(sid)}) == []
    assert not lab.folder(sid).exists()


def test_an_engine_whose_session_ended_is_swept(lab: Lab) -> None:
    sid = lab.running()
    workload_id = lab.row(sid).workload_id
    pgid = _engine_pgid(lab, workload_id)
    with lab.api.db.session() as s:  # ended in the database, engine left behind
        s.get(EngineSession, sid).status = "failed"
    assert lab.manager.remove_orphans() == [workload_id]
    assert group_members(pgid) == []
    assert lab.folder(sid).is_dir()  # the session still exists: its transcript stays


def test_session_folders_go_with_the_engine_and_the_session(lab: Lab) -> None:
    pid = lab.project("short-lived")
    sid = lab.running(pid)
    engine_files = lab.manager.engine_dir(sid)
    assert engine_files.is_dir() and any(engine_files.rglob("*")), "runtime files expected"
    r = lab.client.post("/api/v1/sessions/%d/stop" % sid)
    assert r.status_code == 200, r.text
    lab.wait(sid, "stopped")
    assert not engine_files.exists(), "the ended engine's private files (cookie secret) stay"
    assert (lab.folder(sid) / "transcript.ndjson").is_file()  # the console stays readable
    assert lab.client.delete("/api/v1/projects/%d" % pid).status_code == 204
    lab.manager.remove_orphans()
    assert not lab.folder(sid).exists(), "a deleted session's folder stays behind"
    assert not os.path.exists(lab.folder(sid))


def test_a_new_session_never_shows_what_a_deleted_one_left(lab: Lab) -> None:
    pid = lab.project("deleted-soon")
    old = lab.running(pid)
    with lab.client.stream("POST", "/api/v1/sessions/%d/execute" % old,
                           json={"code": "print('secret-of-the-old-project')"}) as r:
        assert r.status_code == 200 and "secret-of-the-old-project" in r.read().decode()
    assert lab.client.delete("/api/v1/projects/%d" % pid).status_code == 204
    new = lab.running()  # before any sweep ran
    assert new == old  # SQLite hands the highest id out again once its row is gone
    log = lab.client.get("/api/v1/sessions/%d/log" % new).text
    assert "secret-of-the-old-project" not in log, "a new session shows a deleted one's console"
    lab.client.post("/api/v1/sessions/%d/stop" % new)
