"""Experiments through the API on the local orchestrator: runs with arguments, metrics and
tracked files from the `cdsw` library, downloads, comparison, snapshot isolation, faults, stop,
timeouts and a master restart."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cdsw_agent.experiments import launch
from cdsw_agent.orchestrators.local import LocalOrchestrator
from cdsw_agent.server import scheduler
from cdsw_agent.store.experiments_models import ExperimentRun
from cdsw_agent.store.models import AuditEvent

from ..conftest import Api, build_api

FINAL = ("succeeded", "failed", "timed_out", "stopped", "lost")

TRAIN = """\
import sys
import cdsw
alpha, label = float(sys.argv[1]), sys.argv[2]
print("training with alpha", alpha, flush=True)
cdsw.track_metric("alpha", alpha)
cdsw.track_metric("loss", 1.0)
cdsw.track_metric("loss", 1.0 - alpha / 10)  # the last value wins
cdsw.track_metric("label", label)
with open("out/model.txt", "w") as f:
    f.write("model %s\\n" % alpha)
cdsw.track_file("out/model.txt")
"""


@dataclass
class Exp:
    api: Api
    client: TestClient
    project_id: int
    sched: scheduler.Scheduler
    user: Any

    @property
    def base(self) -> str:
        return "/api/v1/projects/%d/experiments" % self.project_id

    @property
    def project(self) -> Path:
        return self.api.settings.projects_dir / str(self.project_id)

    @property
    def runner(self) -> Any:
        return scheduler.experiments_for(self.api.client.app.state.server)

    def file(self, name: str, text: str) -> Path:
        path = self.project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def start(self, client: Optional[TestClient] = None, **body: Any) -> Dict[str, Any]:
        r = (client or self.client).post(self.base, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def get(self, run_id: int) -> Dict[str, Any]:
        r = self.client.get("%s/%d" % (self.base, run_id))
        assert r.status_code == 200, r.text
        return r.json()

    def log(self, run_id: int) -> str:
        r = self.client.get("%s/%d/log" % (self.base, run_id))
        assert r.status_code == 200, r.text
        return r.text

    def wait(self, run_id: int, statuses: tuple = FINAL, timeout: float = 30.0) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(run_id)
            if run["status"] in statuses and (statuses != FINAL or self._finalized(run_id)):
                return self.get(run_id)
            assert time.monotonic() < deadline, "run stayed %s: %s" % (run["status"], run)
            time.sleep(0.05)

    def _finalized(self, run_id: int) -> bool:
        with self.api.db.session() as s:
            run = s.get(ExperimentRun, run_id)
            return bool(run and run.finalized)


def start_experiments(api: Api, threaded: bool = True, user: Any = None,
                      project_id: Optional[int] = None) -> Exp:
    """A fast scheduler following experiment runs, and a signed-in user with a project."""
    state = api.client.app.state.server
    sched = scheduler.Scheduler(scheduler.runner_for(state), interval=0.1)
    sched.followers.append(scheduler.experiments_for(state))
    state.extras[scheduler.SCHEDULER_KEY] = sched
    if threaded:
        sched.start()
    user = user or api.user()
    client = api.client_for(user)
    if project_id is None:
        r = client.post("/api/v1/projects", json={"name": "experiments"})
        assert r.status_code == 201, r.text
        project_id = r.json()["id"]
    return Exp(api, client, project_id, sched, user)


@pytest.fixture
def exp(api: Api) -> Iterator[Exp]:
    e = start_experiments(api)
    yield e
    scheduler.stop(api.client.app.state.server)


@pytest.fixture
def any_exp(any_api: Api) -> Iterator[Exp]:
    e = start_experiments(any_api)
    yield e
    scheduler.stop(any_api.client.app.state.server)


def _collaborator(e: Exp, role: str) -> TestClient:
    user = e.api.user()
    r = e.client.put("/api/v1/projects/%d/collaborators/%d" % (e.project_id, user.id),
                     json={"role": role})
    assert r.status_code == 200, r.text
    return e.api.client_for(user)


# --- runs, metrics, files, compare ---------------------------------------------------------

def test_runs_track_metrics_and_files_and_compare(any_exp: Exp) -> None:
    e = any_exp
    e.file("train.py", TRAIN)
    e.file("out/.keep", "")
    operator = _collaborator(e, "operator")
    in_project = sum(1 for f in e.project.rglob("*") if f.is_file())
    first = e.start(script="train.py", arguments="0.5 'first run'", comment="baseline")
    second = e.start(operator, script="train.py", arguments="2 second")
    a, b = e.wait(first["id"]), e.wait(second["id"])
    assert (a["status"], a["exit_code"], a["reason"]) == ("succeeded", 0, ""), a
    assert a["arguments"] == "0.5 'first run'" and a["comment"] == "baseline"
    assert a["metrics"] == {"alpha": 0.5, "loss": 0.95, "label": "first run"}
    assert a["metric_history"]["loss"] == [1.0, 0.95]
    assert a["files"] == [{"path": "out/model.txt", "size": len("model 0.5\n")}]
    assert a["snapshot"]["files"] == in_project and a["snapshot"]["skipped"] == []
    assert e.log(a["id"]) == "training with alpha 0.5\n"
    assert b["metrics"]["alpha"] == 2 and b["launched_by"] != a["launched_by"]

    # a viewer reads, compares and downloads, but may not start or stop runs
    viewer = _collaborator(e, "viewer")
    r = viewer.get(e.base + "/%d/download" % a["id"], params={"file": "out/model.txt"})
    assert r.status_code == 200 and r.content == b"model 0.5\n", r.text
    r = viewer.get(e.base + "/%d/download" % a["id"], params={"file": "train.py"})
    assert r.status_code == 404 and "tracked no file train.py" in r.json()["error"]
    r = viewer.get(e.base + "/compare", params={"ids": "%d,%d" % (a["id"], b["id"])})
    assert r.status_code == 200, r.text
    cmp = r.json()
    assert [run["id"] for run in cmp["runs"]] == [a["id"], b["id"]]
    assert cmp["metrics"] == [{"metric": "alpha", "values": [0.5, 2]},
                              {"metric": "label", "values": ["first run", "second"]},
                              {"metric": "loss", "values": [0.95, 0.8]}]
    listed = viewer.get(e.base).json()
    assert [r["id"] for r in listed] == [b["id"], a["id"]] and listed[1]["metrics"]["alpha"] == 0.5
    assert viewer.post(e.base, json={"script": "train.py"}).status_code == 403
    r = viewer.get(e.base + "/compare", params={"ids": "%d,999999" % a["id"]})
    assert r.status_code == 404
    assert viewer.get(e.base + "/compare", params={"ids": "x"}).status_code == 422
    # the snapshot is gone once the run ended; the project folder never saw the run
    assert not launch.shared_dir(e.api.settings, a["id"]).exists()
    assert not (e.project / "out" / "model.txt").exists()
    with e.api.db.session() as s:
        actions = s.scalars(select(AuditEvent.action).where(
            AuditEvent.action.like("experiment.%"))).all()
        assert sorted(actions) == ["experiment.run", "experiment.run"]


def test_snapshot_isolates_the_run_from_later_project_edits(exp: Exp) -> None:
    e = exp
    e.file("data.txt", "original\n")
    e.file("read_later.py", "import time, cdsw\ntime.sleep(1.0)\n"
                            "cdsw.track_metric('data', open('data.txt').read().strip())\n"
                            "open('written.txt', 'w').write('by the run')\n")
    run = e.start(script="read_later.py")
    # the project changes while the run works: the run keeps what it had at launch
    e.file("data.txt", "changed\n")
    (e.project / "read_later.py").unlink()
    done = e.wait(run["id"])
    assert done["status"] == "succeeded", (done, e.log(run["id"]))
    assert done["metrics"] == {"data": "original"}
    assert not (e.project / "written.txt").exists()
    assert (e.project / "data.txt").read_text() == "changed\n"


# --- faults ---------------------------------------------------------------------------------

def test_faults_end_clearly_and_leave_nothing_behind(exp: Exp) -> None:
    e = exp
    e.file("fail.py", "import sys\nprint('about to fail')\nsys.exit(3)\n")
    e.file("crash.sh", "echo boom >&2\nkill -9 $$\n")
    e.file("bad_metric.py", "import cdsw\ncdsw.track_metric('x', [1, 2])\n")
    e.file("escape.py", "import os, cdsw\nopen('f.txt', 'w').write('x')\ncdsw.track_file('f.txt')\n"
                        "os.remove('f.txt')\nos.symlink('/etc/hostname', 'f.txt')\n")

    r = e.client.post(e.base, json={"script": "missing.py"})
    assert r.status_code == 422 and "missing.py not found in the project" in r.json()["error"]
    r = e.client.post(e.base, json={"script": "notes.txt"})
    assert r.status_code == 422 and "an experiment runs a .py, .R, .sh or .scala script" in r.text
    r = e.client.post(e.base, json={"script": "fail.py", "arguments": "'unclosed"})
    assert r.status_code == 422 and r.json()["error"].startswith("invalid request: arguments")

    failed = e.wait(e.start(script="fail.py")["id"])
    assert (failed["status"], failed["exit_code"], failed["reason"]) == ("failed", 3,
                                                                          "exit code 3")
    crashed = e.wait(e.start(script="crash.sh")["id"])
    assert (crashed["status"], crashed["exit_code"]) == ("failed", 137)
    assert "boom" in e.log(crashed["id"])
    bad = e.wait(e.start(script="bad_metric.py")["id"])
    assert bad["status"] == "failed" and "must be a number or a string, not list" in \
        e.log(bad["id"])
    # a tracked file swapped for a symlink to a master file is not copied
    escaped = e.wait(e.start(script="escape.py")["id"])
    assert escaped["status"] == "succeeded" and escaped["files"] == []
    assert "tracked file f.txt: not kept" in e.log(escaped["id"])

    # a snapshot that cannot be taken fails the run at once, with no leftovers
    e.runner.max_snapshot_bytes = 10
    big = e.start(script="fail.py")
    assert big["status"] == "failed" and "more than the 10 bytes" in big["reason"], big
    assert e.log(big["id"]) == big["reason"] + "\n"
    assert not launch.shared_dir(e.api.settings, big["id"]).exists()
    assert list((e.api.settings.projects_dir / ".experiments").iterdir()) == []


def test_stop_and_timeout(exp: Exp) -> None:
    e = exp
    e.file("slow.py", "import time\nprint('working', flush=True)\ntime.sleep(30)\n")
    run = e.wait(e.start(script="slow.py")["id"], statuses=("running",))
    stopped = e.client.post(e.base + "/%d/stop" % run["id"])
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped", stopped.text
    assert stopped.json()["reason"] == "stopped by %s" % e.user.username
    again = e.client.post(e.base + "/%d/stop" % run["id"])
    assert again.status_code == 409 and "already ended (stopped)" in again.json()["error"]

    # deleting the project stops its runs first: their engines are removed, not left running
    doomed = e.wait(e.start(script="slow.py")["id"], statuses=("running",))
    workloads = LocalOrchestrator(Path(e.api.settings.data_dir) / "orchestrator" / "local")
    assert len(workloads.list({launch.RUN_LABEL: str(doomed["id"])})) == 1
    other = e.client.post("/api/v1/projects", json={"name": "kept"}).json()["id"]
    r = e.client.delete("/api/v1/projects/%d" % e.project_id)
    assert r.status_code == 204, r.text
    assert workloads.list({"io.cdsw.kind": "experiment"}) == []
    assert not launch.shared_dir(e.api.settings, doomed["id"]).exists()
    e.project_id = other

    # an engine whose run vanished some other way (a database restored from an older backup)
    # is found by the orphan sweep and removed with its snapshot
    e.file("slow.py", "import time\nprint('working', flush=True)\ntime.sleep(30)\n")
    orphan = e.wait(e.start(script="slow.py")["id"], statuses=("running",))
    [ref] = workloads.list({launch.RUN_LABEL: str(orphan["id"])})
    with e.api.db.session() as s:
        s.delete(s.get(ExperimentRun, orphan["id"]))
    assert e.runner.remove_orphans() == [ref.id]
    assert workloads.list({"io.cdsw.kind": "experiment"}) == []
    assert not launch.shared_dir(e.api.settings, orphan["id"]).exists()

    e.file("slow.py", "import time\nprint('working', flush=True)\ntime.sleep(30)\n")
    timed = e.wait(e.start(script="slow.py", timeout_minutes=1)["id"], statuses=("running",))
    e.runner.clock = lambda: time_shifted(minutes=2)
    done = e.wait(timed["id"])
    assert done["status"] == "timed_out" and done["exit_code"] == 143, done
    assert done["reason"] == "stopped: ran longer than its timeout of 1 minute"


def time_shifted(**delta: float) -> Any:
    import datetime as dt

    from cdsw_agent.store.models import utcnow

    return utcnow() + dt.timedelta(**delta)


# --- master restart -------------------------------------------------------------------------

def test_master_restart_adopts_runs_and_records_real_results(api: Api) -> None:
    e = start_experiments(api, threaded=False)  # the master dies right after starting runs
    e.file("quick.py", "import cdsw\ncdsw.track_metric('n', 7)\nopen('r.txt', 'w').write('r')\n"
                       "cdsw.track_file('r.txt')\nprint('quick')\n")
    e.file("slow.py", "import time, cdsw\nprint('start', flush=True)\ntime.sleep(1.5)\n"
                      "cdsw.track_metric('slow', 'done')\nprint('done')\n")
    in_project = sum(1 for f in e.project.rglob("*") if f.is_file())
    quick = e.start(script="quick.py")
    slow = e.start(script="slow.py")
    with api.db.session() as s:  # it died right after recording a run, before its snapshot
        queued = ExperimentRun(project_id=e.project_id, script="quick.py", arguments="",
                               comment="", status="queued", reason="", finalized=False,
                               metrics={}, files=[], snapshot={})
        s.add(queued)
    workloads = LocalOrchestrator(Path(api.settings.data_dir) / "orchestrator" / "local")
    [ref] = workloads.list({launch.RUN_LABEL: str(quick["id"])})
    deadline = time.monotonic() + 15
    while not workloads.status(ref.id).final:  # it ends while the master is down
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert e.get(quick["id"])["status"] in ("queued", "running")

    api2 = build_api(api.settings, api.db.url)
    try:
        e2 = start_experiments(api2, user=e.user, project_id=e.project_id)
        q = e2.wait(quick["id"])
        assert (q["status"], q["metrics"], q["files"]) == (
            "succeeded", {"n": 7}, [{"path": "r.txt", "size": 1}]), q
        assert e2.log(quick["id"]) == "quick\n"
        s_done = e2.wait(slow["id"])
        assert s_done["status"] == "succeeded" and s_done["metrics"] == {"slow": "done"}
        assert e2.log(slow["id"]) == "start\ndone\n"
        late = e2.wait(queued.id)
        assert late["status"] == "succeeded" and late["metrics"] == {"n": 7}, late
        assert late["snapshot"]["files"] == in_project
        r = e2.client.get(e2.base + "/%d/download" % quick["id"], params={"file": "r.txt"})
        assert r.content == b"r"
        assert workloads.list({"io.cdsw.kind": "experiment"}) == []  # removed once ended
    finally:
        scheduler.stop(api2.client.app.state.server)
        api2.db.engine.dispose()


# --- schema ---------------------------------------------------------------------------------

def test_experiments_schema_matches_the_models_and_goes_back(db_url: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from cdsw_agent.store.db import Database
    from cdsw_agent.store.models import Base

    db = Database(db_url)
    try:
        db.upgrade()
        with db.engine.connect() as c:
            diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}),
                                    Base.metadata)
        assert [d for d in diff if "experiment" in repr(d)] == []
        command.downgrade(db._alembic_config(), "0003")
        with db.engine.connect() as c:
            assert "experiment_runs" not in set(db.engine.dialect.get_table_names(c))
    finally:
        db.engine.dispose()
