"""Jobs through the API on the local orchestrator: runs, failures, timeouts, pipelines, cron
policies (skip while running, one catch-up after downtime) and a master restart mid-run."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cdsw_agent.orchestrators import OrchestratorError
from cdsw_agent.orchestrators.local import LocalOrchestrator
from cdsw_agent.server import scheduler
from cdsw_agent.server.app import API_PREFIX
from cdsw_agent.server.routes import jobs as jobs_routes
from cdsw_agent.store.jobs_models import Job, JobRun
from cdsw_agent.store.models import AuditEvent, utcnow

from ..conftest import Api, build_api

FINAL = ("succeeded", "failed", "timed_out", "stopped", "lost", "skipped")


class FakeClock:
    """Real time, moved forward on demand, or frozen at a chosen instant."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)
        self.frozen: Optional[dt.datetime] = None

    def __call__(self) -> dt.datetime:
        return self.frozen if self.frozen is not None else utcnow() + self.offset

    def advance(self, **delta: float) -> None:
        if self.frozen is not None:
            self.frozen += dt.timedelta(**delta)
        else:
            self.offset += dt.timedelta(**delta)


@dataclass
class Jobs:
    api: Api
    client: TestClient
    project_id: int
    clock: FakeClock
    sched: scheduler.Scheduler
    user: Any = None

    @property
    def base(self) -> str:
        return "/api/v1/projects/%d" % self.project_id

    def script(self, name: str, text: str) -> Path:
        path = self.api.settings.projects_dir / str(self.project_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def create(self, **body: Any) -> Dict[str, Any]:
        r = self.client.post(self.base + "/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def run(self, job_id: int) -> Dict[str, Any]:
        r = self.client.post(self.base + "/jobs/%d/runs" % job_id)
        assert r.status_code == 201, r.text
        return r.json()

    def runs(self, job_id: int) -> List[Dict[str, Any]]:
        r = self.client.get(self.base + "/jobs/%d/runs" % job_id)
        assert r.status_code == 200, r.text
        return r.json()

    def get_run(self, job_id: int, run_id: int) -> Dict[str, Any]:
        return self.client.get(self.base + "/jobs/%d/runs/%d" % (job_id, run_id)).json()

    def log(self, job_id: int, run_id: int, offset: int = 0) -> str:
        r = self.client.get(self.base + "/jobs/%d/runs/%d/log" % (job_id, run_id),
                            params={"offset": offset})
        assert r.status_code == 200, r.text
        return r.text

    # Python scripts start the engine's kernel first: seconds alone, up to a minute on a loaded
    # two-core machine (the waits only bound how long a failure takes to show)
    def wait(self, job_id: int, run_id: int, statuses: tuple = FINAL, timeout: float = 90.0,
             tick: bool = False) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            if tick:
                self.sched.tick()
            run = self.get_run(job_id, run_id)
            if run["status"] in statuses:
                return run
            assert time.monotonic() < deadline, "run stayed %s: %s" % (run["status"], run)
            time.sleep(0.05)

    def wait_log(self, job_id: int, run_id: int, text: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.log(job_id, run_id):
            assert time.monotonic() < deadline, self.log(job_id, run_id)
            time.sleep(0.05)
        return self.log(job_id, run_id)

    def wait_runs(self, job_id: int, count: int, timeout: float = 90.0) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs(job_id)
            if len(runs) >= count and all(r["status"] in FINAL for r in runs):
                return runs
            assert time.monotonic() < deadline, runs
            time.sleep(0.05)


def start_jobs(api: Api, threaded: bool = True, user: Any = None,
               project_id: Optional[int] = None) -> Jobs:
    """Mounts the jobs routes if the app does not yet, starts a fast scheduler and signs a
    user in (creating one and a project unless given)."""
    app = api.client.app
    if not any(getattr(r, "path", "").endswith("/pipeline") for r in app.routes):
        app.include_router(jobs_routes.router, prefix=API_PREFIX)
    state = app.state.server
    clock = FakeClock()
    runner = scheduler.runner_for(state, clock)
    runner.clock = clock
    sched = scheduler.Scheduler(runner, interval=0.1)
    state.extras[scheduler.SCHEDULER_KEY] = sched
    if threaded:
        sched.start()
    user = user or api.user()
    client = api.client_for(user)
    if project_id is None:
        r = client.post("/api/v1/projects", json={"name": "jobs"})
        assert r.status_code == 201, r.text
        project_id = r.json()["id"]
    return Jobs(api, client, project_id, clock, sched, user)


@pytest.fixture
def jobs(api: Api) -> Iterator[Jobs]:
    j = start_jobs(api)
    yield j
    scheduler.stop(api.client.app.state.server)


@pytest.fixture
def any_jobs(any_api: Api) -> Iterator[Jobs]:
    j = start_jobs(any_api)
    yield j
    scheduler.stop(any_api.client.app.state.server)


@pytest.fixture
def cron_jobs(api: Api) -> Iterator[Jobs]:
    """The scheduler ticks only when the test says so, on a frozen clock."""
    j = start_jobs(api, threaded=False)
    j.clock.frozen = utcnow().replace(second=0, microsecond=0) + dt.timedelta(seconds=10)
    yield j
    scheduler.stop(api.client.app.state.server)


# --- runs --------------------------------------------------------------------------------

def test_manual_run_succeeds_with_log_and_roles(any_jobs: Jobs) -> None:
    j = any_jobs
    j.script("hello.py", "import os, sys\nprint('hello', sys.argv[1:])\n"
                         "print('job', os.environ['CDSW_JOB_ID'], os.environ['GREETING'])\n"
                         "print('run', os.environ['CDSW_RUN_ID'])\n")
    job = j.create(name="hello", script="hello.py", arguments="a 'b c'", env={"GREETING": "hi"})
    assert job["schedule_kind"] == "manual" and job["last_run"] is None
    assert job["env"] == {"GREETING": "hi"} and job["created_by"]
    run = j.run(job["id"])
    assert run["trigger"] == "manual" and run["status"] in ("queued", "running")
    done = j.wait(job["id"], run["id"])
    assert done["status"] == "succeeded" and done["exit_code"] == 0, done
    assert done["node"] and done["started_at"] and done["finished_at"]
    assert done["duration_seconds"] is not None and done["triggered_by"]
    text = j.log(job["id"], run["id"])
    assert text.splitlines() == ["hello ['a', 'b c']", "job %d hi" % job["id"],
                                 "run %d" % run["id"]]
    # tailing: from an offset, the rest; the header says where to continue
    r = j.client.get(j.base + "/jobs/%d/runs/%d/log" % (job["id"], run["id"]),
                     params={"offset": len("hello ['a', 'b c']\n")})
    assert r.text.startswith("job %d" % job["id"])
    assert int(r.headers["X-Log-Offset"]) == len(text.encode())
    assert j.client.get(j.base + "/jobs/%d" % job["id"]).json()["last_run"]["status"] == "succeeded"
    assert [r["id"] for r in j.runs(job["id"])] == [run["id"]]
    # viewers read (secret values hidden), operators run, only contributors change jobs
    viewer, operator = j.api.user(), j.api.user()
    for u, role in ((viewer, "viewer"), (operator, "operator")):
        r = j.client.put(j.base + "/collaborators/%d" % u.id, json={"role": role})
        assert r.status_code == 200, r.text
    vc, oc = j.api.client_for(viewer), j.api.client_for(operator)
    assert vc.get(j.base + "/jobs/%d" % job["id"]).json()["env"] == {"GREETING": "****"}
    assert vc.post(j.base + "/jobs/%d/runs" % job["id"]).status_code == 403
    assert oc.patch(j.base + "/jobs/%d" % job["id"], json={"arguments": ""}).status_code == 403
    r = oc.post(j.base + "/jobs/%d/runs" % job["id"])
    assert r.status_code == 201, r.text
    j.wait(job["id"], r.json()["id"])
    outsider = j.api.client_for(j.api.user())
    assert outsider.get(j.base + "/jobs").status_code == 404
    # deleting the project takes its jobs and their history with it, on every database
    assert j.client.delete(j.base).status_code == 204
    with j.api.db.session() as s:
        assert s.scalars(select(JobRun)).all() == [] and s.scalars(select(Job)).all() == []


def test_failing_crashing_and_missing_scripts_end_clearly(jobs: Jobs,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    j = jobs
    j.script("fail.py", "import sys\nprint('about to fail')\nsys.exit(3)\n")
    j.script("crash.sh", "echo boom >&2\nkill -9 $$\n")
    j.script("gone.py", "print('never')\n")
    fail = j.create(name="fail", script="fail.py")
    crash = j.create(name="crash", script="crash.sh")
    gone = j.create(name="gone", script="gone.py")
    (j.api.settings.projects_dir / str(j.project_id) / "gone.py").unlink()

    r = j.wait(fail["id"], j.run(fail["id"])["id"])
    assert (r["status"], r["exit_code"], r["reason"]) == ("failed", 3, "exit code 3")
    assert j.log(fail["id"], r["id"]) == "about to fail\n"

    r = j.wait(crash["id"], j.run(crash["id"])["id"])
    assert (r["status"], r["exit_code"], r["reason"]) == ("failed", 137, "killed by SIGKILL")
    assert "boom" in j.log(crash["id"], r["id"])

    started = j.run(gone["id"])
    assert started["status"] == "failed"  # known at once: no engine is started
    assert started["reason"] == "script gone.py not found" and started["exit_code"] is None
    assert j.log(gone["id"], started["id"]) == "script gone.py not found\n"

    # the engine dies with the whole workload (host reboot, OOM killer on the runner): lost
    j.script("slow.py", "import time\nprint('up', flush=True)\ntime.sleep(30)\n")
    slow = j.create(name="slow", script="slow.py")
    run = j.run(slow["id"])
    j.wait_log(slow["id"], run["id"], "up")
    workloads = LocalOrchestrator(Path(j.api.settings.data_dir) / "orchestrator" / "local")
    [ref] = workloads.list({"io.cdsw.job-run": str(run["id"])})
    os.killpg(int((workloads.root / ref.id / "pid").read_text()), signal.SIGKILL)
    lost = j.wait(slow["id"], run["id"])
    assert lost["status"] == "lost" and "disappeared" in lost["reason"], lost
    assert j.log(slow["id"], run["id"]) == "up\n"

    # the orchestrator refuses the workload: failed at once, with its words
    runner = scheduler.runner_for(j.api.client.app.state.server)

    def refuse(spec: Any) -> Any:
        raise OrchestratorError("image engine:1 is not on any node")

    monkeypatch.setattr(runner.orchestrator, "launch", refuse)
    r = j.run(fail["id"])
    assert (r["status"], r["reason"]) == ("failed", "cannot start the engine: image engine:1 "
                                                    "is not on any node")


def test_a_lost_runs_engine_is_killed_before_it_writes_into_the_project(jobs: Jobs) -> None:
    j = jobs
    j.script("late.py", "import time\nprint('up', flush=True)\ntime.sleep(3)\n"
                        "open('late-result.txt', 'w').write('written after the run was lost')\n")
    job = j.create(name="late", script="late.py")
    run = j.run(job["id"])
    j.wait_log(job["id"], run["id"], "up")
    workloads = LocalOrchestrator(Path(j.api.settings.data_dir) / "orchestrator" / "local")
    [ref] = workloads.list({"io.cdsw.job-run": str(run["id"])})
    runner = int((workloads.root / ref.id / "pid").read_text())
    os.kill(runner, signal.SIGKILL)  # only the runner: its engine lives on under init
    lost = j.wait(job["id"], run["id"])
    assert lost["status"] == "lost" and lost["reason"].endswith("its engine was stopped"), lost
    time.sleep(4)
    assert not (j.api.settings.projects_dir / str(j.project_id) / "late-result.txt").exists(), \
        "the engine of a run declared lost went on and wrote into the project"


def test_timeout_and_stop(jobs: Jobs) -> None:
    j = jobs
    j.script("slow.py", "import time\nprint('working', flush=True)\ntime.sleep(30)\n")
    job = j.create(name="slow", script="slow.py", timeout_minutes=1)
    run = j.wait(job["id"], j.run(job["id"])["id"], statuses=("running",))
    r = j.client.post(j.base + "/jobs/%d/runs" % job["id"])
    assert r.status_code == 409 and "already running (run %d)" % run["id"] in r.json()["error"]
    assert j.wait_log(job["id"], run["id"], "working") == "working"  # tailed while running
    j.clock.advance(minutes=2)  # the run is now past its timeout
    done = j.wait(job["id"], run["id"])
    assert done["status"] == "timed_out", done
    assert done["reason"] == "stopped: ran longer than its timeout of 1 minute"
    # SIGTERM ended it (143), not the end of its 30 s sleep (0); the duration also counts the
    # kernel's start, seconds alone and far more on a loaded machine
    assert done["exit_code"] == 143
    assert j.log(job["id"], run["id"]) == "working\n"

    nolimit = j.create(name="nolimit", script="slow.py", timeout_minutes=0)
    run = j.wait(nolimit["id"], j.run(nolimit["id"])["id"], statuses=("running",))
    j.clock.advance(minutes=600)
    time.sleep(0.3)
    assert j.get_run(nolimit["id"], run["id"])["status"] == "running"  # 0: no timeout
    r = j.client.post(j.base + "/jobs/%d/runs/%d/stop" % (nolimit["id"], run["id"]))
    assert r.status_code == 200 and r.json()["status"] == "stopped", r.text
    assert r.json()["reason"].startswith("stopped by ")
    r = j.client.post(j.base + "/jobs/%d/runs/%d/stop" % (nolimit["id"], run["id"]))
    assert r.status_code == 409 and "already ended (stopped)" in r.json()["error"]
    # deleting a project first stops its runs (the helper the project route calls)
    again = j.run(nolimit["id"])
    runner = scheduler.runner_for(j.api.client.app.state.server)
    assert runner.stop_project_runs(j.project_id, "admin") == [again["id"]]
    assert j.get_run(nolimit["id"], again["id"])["status"] == "stopped"


# --- validation and pipelines ------------------------------------------------------------

def test_each_bad_job_gets_one_clear_error(any_jobs: Jobs) -> None:
    j = any_jobs
    j.script("a.py", "print('a')\n")
    def post(**body: Any) -> Any:
        return j.client.post(j.base + "/jobs", json=dict(dict(name="x", script="a.py"), **body))

    cases = [
        (dict(schedule="every monday"), 422, "schedule", "five fields"),
        (dict(name="two\nlines"), 422, "name", "pattern"),
        (dict(schedule="0 6 * * *", timezone="Mars/Olympus"), 422, "timezone", "IANA"),
        (dict(script="../../etc/passwd.py"), 422, "script", "inside the project"),
        (dict(script="missing.py"), 422, "script", "missing.py not found"),
        (dict(script="a.txt"), 422, "script", ".py, .R, .sh or .scala"),
        (dict(arguments="'open"), 422, "arguments", "quot"),
        (dict(parent_job_id=99999), 422, "parent_job_id", "no job 99999"),
        (dict(engine_image_id=99999), 422, "engine_image_id", "no such engine image"),
        (dict(recipients=["not-an-address"]), 422, "recipients", "not a mail address"),
        (dict(notify_on=["sometimes"]), 422, "notify_on", "not an event"),
        (dict(env={"1BAD": "x"}), 422, "env", "not a variable name"),
    ]
    for body, status, field_, words in cases:
        r = post(**body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"].startswith("invalid request: %s: " % field_), r.text
        assert words in r.json()["error"], r.text
    assert j.client.get(j.base + "/jobs").json() == []  # nothing half-made
    a = j.create(name="a", script="a.py", schedule="*/5 * * * *", timezone="Europe/Berlin")
    assert a["schedule_kind"] == "cron" and a["next_run_at"]
    assert post(name="a").status_code == 409
    r = post(name="b", parent_job_id=a["id"], schedule="0 * * * *")
    assert r.status_code == 422 and "not both" in r.json()["error"]
    r = j.client.patch(j.base + "/jobs/%d" % a["id"], json={"schedule": "0 25 * * *"})
    assert r.status_code == 422 and "schedule" in r.json()["error"]
    r = j.client.patch(j.base + "/jobs/%d" % a["id"], json={"schedule": None})
    assert r.status_code == 200 and r.json()["schedule_kind"] == "manual", r.text


def test_pipeline_runs_children_after_success_only_and_refuses_cycles(jobs: Jobs) -> None:
    j = jobs
    j.script("a.py", "import os, sys\nprint('a')\n"
                     "sys.exit(1 if os.path.exists('fail.flag') else 0)\n")
    j.script("b.py", "print('b')\n")
    j.script("c.sh", "echo c\n")
    a = j.create(name="a", script="a.py")
    b = j.create(name="b", script="b.py", parent_job_id=a["id"])
    c = j.create(name="c", script="c.sh", parent_job_id=b["id"])
    assert b["schedule_kind"] == "dependent"
    first = j.wait(a["id"], j.run(a["id"])["id"])
    assert first["status"] == "succeeded"
    [b_run] = j.wait_runs(b["id"], 1)
    assert b_run["trigger"] == "parent" and b_run["parent_run_id"] == first["id"]
    assert b_run["status"] == "succeeded"
    [c_run] = j.wait_runs(c["id"], 1)
    assert c_run["status"] == "succeeded" and c_run["parent_run_id"] == b_run["id"]
    assert j.log(c["id"], c_run["id"]) == "c\n"

    g = j.client.get(j.base + "/pipeline").json()
    assert [(n["name"], n["last_status"]) for n in g["nodes"]] == \
        [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded")]
    assert g["edges"] == [{"from": a["id"], "to": b["id"]}, {"from": b["id"], "to": c["id"]}]

    j.script("fail.flag", "")
    second = j.wait(a["id"], j.run(a["id"])["id"])
    assert second["status"] == "failed"
    j.sched.tick()  # give the scheduler a chance to (wrongly) start b
    time.sleep(0.3)
    assert len(j.runs(b["id"])) == 1 and len(j.runs(c["id"])) == 1

    r = j.client.patch(j.base + "/jobs/%d" % a["id"], json={"parent_job_id": c["id"]})
    assert r.status_code == 409, r.text
    assert "cycle: a -> c -> b -> a" in r.json()["error"]
    r = j.client.patch(j.base + "/jobs/%d" % a["id"], json={"parent_job_id": a["id"]})
    assert r.status_code == 409 and "cycle: a -> a" in r.json()["error"]
    r = j.client.delete(j.base + "/jobs/%d" % b["id"])
    assert r.status_code == 409 and "job c runs after this one" in r.json()["error"]
    assert j.client.delete(j.base + "/jobs/%d" % c["id"]).status_code == 204
    assert j.client.get(j.base + "/jobs/%d" % c["id"]).status_code == 404


# --- cron policies -----------------------------------------------------------------------

def test_cron_skips_while_previous_run_is_running(cron_jobs: Jobs) -> None:
    j = cron_jobs
    j.script("slow.py", "import time\ntime.sleep(30)\n")
    job = j.create(name="every-minute", script="slow.py", schedule="* * * * *")
    j.sched.tick()
    assert j.runs(job["id"]) == []  # nothing is due yet
    j.clock.advance(minutes=1)
    j.sched.tick()
    [first] = j.runs(job["id"])
    assert first["trigger"] == "schedule" and first["status"] in ("queued", "running"), first
    j.wait(job["id"], first["id"], statuses=("running",), tick=True)
    j.sched.tick()
    assert len(j.runs(job["id"])) == 1  # the same fire time never starts twice
    j.clock.advance(minutes=1)
    j.sched.tick()
    skipped, still = j.runs(job["id"])
    assert skipped["status"] == "skipped" and skipped["trigger"] == "schedule"
    assert skipped["reason"] == "run %d was still running" % first["id"]
    assert still["id"] == first["id"] and still["status"] == "running"
    j.client.post(j.base + "/jobs/%d/runs/%d/stop" % (job["id"], first["id"]))
    j.clock.advance(minutes=1)
    j.sched.tick()
    latest = j.runs(job["id"])[0]
    assert latest["id"] > skipped["id"] and latest["trigger"] == "schedule"
    assert latest["status"] in ("queued", "running")
    j.client.post(j.base + "/jobs/%d/runs/%d/stop" % (job["id"], latest["id"]))


def test_downtime_is_made_up_by_exactly_one_run(cron_jobs: Jobs) -> None:
    j = cron_jobs
    j.script("quick.py", "print('tick')\n")
    job = j.create(name="five-minutes", script="quick.py", schedule="*/5 * * * *")
    j.clock.advance(hours=3)  # the master was down; 36 fire times went by
    for _ in range(3):
        j.sched.tick()
    [run] = j.runs(job["id"])
    assert run["trigger"] == "catch-up"
    assert j.wait(job["id"], run["id"], tick=True)["status"] == "succeeded"
    with j.api.db.session() as s:
        last = s.get(Job, job["id"]).last_scheduled_at
    assert last is not None and last.minute % 5 == 0 and j.clock() - last < dt.timedelta(minutes=5)
    j.clock.frozen = last + dt.timedelta(minutes=5, seconds=2)  # the next fire time, on time
    j.sched.tick()
    runs = j.runs(job["id"])
    assert len(runs) == 2 and runs[0]["trigger"] == "schedule", runs
    j.wait(job["id"], runs[0]["id"], tick=True)
    # disabled jobs are not scheduled, and re-enabling does not make up the paused time
    job_url = j.base + "/jobs/%d" % job["id"]
    assert j.client.patch(job_url, json={"enabled": False}).status_code == 200
    j.clock.advance(hours=1)
    j.sched.tick()
    assert len(j.runs(job["id"])) == 2
    assert j.client.patch(job_url, json={"enabled": True}).status_code == 200
    j.sched.tick()
    assert len(j.runs(job["id"])) == 2


# --- master restart ----------------------------------------------------------------------

def test_master_restart_keeps_runs_and_their_real_results(api: Api) -> None:
    j = start_jobs(api, threaded=False)  # the master dies right after starting the runs
    j.script("quick.sh", "echo quick output\nexit 3\n")
    j.script("slow.py", "import time\nprint('start', flush=True)\ntime.sleep(1.5)\nprint('done')\n")
    j.script("ok.sh", "echo ok\n")
    quick = j.create(name="quick", script="quick.sh")
    slow = j.create(name="slow", script="slow.py")
    parent = j.create(name="parent", script="ok.sh")
    child = j.create(name="child", script="ok.sh", parent_job_id=parent["id"])
    other = j.create(name="other", script="ok.sh")
    q_run = j.run(quick["id"])
    s_run = j.run(slow["id"])
    with api.db.session() as s:
        # it died right after recording a run, before launching it ...
        queued = JobRun(job_id=other["id"], trigger="manual", status="queued", reason="",
                        finalized=False, log_path="", triggered_by_id=j.user.id,
                        run_as_user_id=j.user.id)
        # ... and right after recording a parent's success, before starting its child
        done = JobRun(job_id=parent["id"], trigger="manual", status="succeeded", exit_code=0,
                      reason="", finalized=False, log_path="", started_at=utcnow(),
                      finished_at=utcnow())
        s.add_all([done, queued])
        s.flush()
        queued.log_path = "jobs/runs/%d.log" % queued.id

    # the quick run ends while the master is down; the database does not know yet
    workloads = LocalOrchestrator(Path(api.settings.data_dir) / "orchestrator" / "local")
    [q_workload] = workloads.list({"io.cdsw.job-run": str(q_run["id"])})
    deadline = time.monotonic() + 10
    while not workloads.status(q_workload.id).final:
        assert time.monotonic() < deadline, workloads.status(q_workload.id)
        time.sleep(0.05)
    assert j.get_run(quick["id"], q_run["id"])["status"] in ("queued", "running")

    # a new master on the same database and data directory
    api2 = build_api(api.settings, api.db.url)
    try:
        j2 = start_jobs(api2, user=j.user, project_id=j.project_id)
        q = j2.wait(quick["id"], q_run["id"])
        assert (q["status"], q["exit_code"]) == ("failed", 3), q
        assert j2.log(quick["id"], q_run["id"]) == "quick output\n"
        s_done = j2.wait(slow["id"], s_run["id"])
        assert s_done["status"] == "succeeded", s_done
        assert j2.log(slow["id"], s_run["id"]) == "start\ndone\n"
        assert s_done["finished_at"] > q["finished_at"]
        assert j2.wait(other["id"], queued.id)["status"] == "succeeded"
        assert j2.log(other["id"], queued.id) == "ok\n"
        [child_run] = j2.wait_runs(child["id"], 1)
        assert child_run["parent_run_id"] == done.id and child_run["status"] == "succeeded"
        j2.sched.tick()
        assert len(j2.runs(child["id"])) == 1  # follow-ups happen once
        assert workloads.list({"io.cdsw.kind": "job"}) == []  # finished workloads are removed
        with api2.db.session() as s:  # runs nobody started by hand are audited too
            events = s.scalars(select(AuditEvent).where(AuditEvent.actor == "scheduler")).all()
            assert [(e.action, e.detail["trigger"]) for e in events] == [("job.run", "parent")]
    finally:
        scheduler.stop(api2.client.app.state.server)
        api2.db.engine.dispose()


# --- schema ------------------------------------------------------------------------------

def test_jobs_schema_matches_the_models_and_goes_back(db_url: str) -> None:
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
        assert [d for d in diff if "job" in repr(d)] == []
        command.downgrade(db._alembic_config(), "0001")
        with db.engine.connect() as c:
            assert not {"jobs", "job_runs"} & set(db.engine.dialect.get_table_names(c))
    finally:
        db.engine.dispose()


def test_scheduler_wakes_when_a_run_is_due_not_at_the_next_tick(api: Api) -> None:
    """With ticks 60 s apart, a job firing in 10 s is started PRESTART_SECONDS before that, 5 s
    from now: the scheduler sleeps until the moment a job needs it, not until its next tick."""
    j = start_jobs(api, threaded=False)
    try:
        j.script("quick.py", "print('on time')\n")
        job = j.create(name="every-minute", script="quick.py", schedule="* * * * *")
        now = utcnow()
        minute = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        j.clock.offset = minute - dt.timedelta(seconds=10) - now  # the clock reads hh:mm:50
        j.sched.interval = 60.0
        due_at = time.monotonic() + 10.0 - scheduler.PRESTART_SECONDS
        j.sched.start()  # the first tick counts the job from now: nothing before it is due
        deadline = due_at + 20.0  # well before the next tick, 60 s away
        while not j.runs(job["id"]):
            assert time.monotonic() < deadline, "no run %.1f s after it was due" % (
                time.monotonic() - due_at)
            time.sleep(0.05)
        late = time.monotonic() - due_at
        [run] = j.runs(job["id"])
        assert run["trigger"] == "schedule", run
        assert late > -0.5, "started before it was due (%.2f s early)" % -late
        assert late < 2.0, "started %.2f s after it was due" % late
    finally:
        scheduler.stop(api.client.app.state.server)


def test_a_cron_run_starts_its_engine_ahead_and_its_script_on_the_second(api: Api) -> None:
    """The run is recorded and its engine launched PRESTART_SECONDS before the fire time; the
    script (a shell script, and a Python one in the engine's kernel) starts at the fire time."""
    j = start_jobs(api, threaded=False)
    try:
        j.script("clock.sh", "date +%s.%N\n")
        j.script("clock.py", "import time\nprint(repr(time.time()))\n")
        jobs = [j.create(name="sh", script="clock.sh", schedule="* * * * *"),
                j.create(name="py", script="clock.py", schedule="* * * * *")]
        now = utcnow()
        minute = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        j.clock.offset = minute - dt.timedelta(seconds=9) - now  # the clock reads hh:mm:51
        fire_at = time.time() + 9.0
        j.sched.interval = 0.5
        j.sched.start()  # the first tick counts the jobs from now
        recorded: Dict[int, float] = {}
        deadline = time.time() + 30
        while len(recorded) < 2:
            assert time.time() < deadline, "no run ahead of the fire time"
            for job in jobs:
                if job["id"] not in recorded and j.runs(job["id"]):
                    recorded[job["id"]] = time.time()
            time.sleep(0.05)
        for job in jobs:
            ahead = fire_at - recorded[job["id"]]
            assert scheduler.PRESTART_SECONDS - 1.5 < ahead <= scheduler.PRESTART_SECONDS + 0.1, \
                (job["name"], ahead)
            [run] = j.runs(job["id"])
            assert run["trigger"] == "schedule", run
            done = j.wait(job["id"], run["id"])
            assert done["status"] == "succeeded", done
            # the run counts as started at its fire time (its timeout too), not 5 s before
            counted = dt.datetime.fromisoformat(done["started_at"]).replace(tzinfo=None)
            assert abs((counted - minute.replace(tzinfo=None)).total_seconds()) < 0.5, counted
            started = float(j.log(job["id"], run["id"]).strip().splitlines()[-1])
            assert fire_at - 0.05 <= started < fire_at + 1.0, (job["name"], started - fire_at)
    finally:
        scheduler.stop(api.client.app.state.server)
