"""Whom workloads act as, tried by a collaborator with bad intent (issue 10), on the local
orchestrator: jobs (manual, scheduled, dependent), model replicas and builds, project transfer
and session sharing.

The rule: a workload acts as the person whose action started it. A scheduled or dependent run
acts as whoever last changed what the job runs; a replica as whoever last deployed the model;
a build as nobody.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import httpx
import pytest
from sqlalchemy import select

from cdsw_agent.server import scheduler
from cdsw_agent.store.jobs_models import Job, JobRun
from cdsw_agent.store.models import AuditEvent, User, utcnow
from cdsw_agent.store.sessions_models import EngineSession, SessionShare

from ..conftest import Api, build_api, make_settings
from .test_experiments_api import start_experiments
from .test_jobs_api import Jobs, start_jobs
from .test_models_api import Models, ready, start_models, stop_all

WHO = "import os\nprint('user', os.environ['HADOOP_USER_NAME'], os.environ['CDSW_USER'])\n"


def _nightly_and_mallory(j: Jobs) -> Tuple[User, httpx.Client, Dict[str, Any]]:
    """alice's job nightly (every minute, nightly.py) and mallory, a Contributor, with her
    client."""
    mallory = j.api.user("mallory")
    _add(j.api, j.client, j.project_id, mallory, "contributor")
    j.script("nightly.py", WHO)
    job = j.create(name="nightly", script="nightly.py", schedule="* * * * *")
    return mallory, j.api.client_for(mallory), job


def _next_scheduled_run(j: Jobs, job_id: int) -> Dict[str, Any]:
    """The clock moves on a minute; the scheduler starts the job's run and sees it through."""
    j.clock.advance(minutes=1)
    j.sched.tick()
    return j.wait(job_id, j.runs(job_id)[0]["id"], tick=True)


def _add(api: Api, client: Any, pid: int, user: User, role: str) -> None:
    r = client.put("/api/v1/projects/%d/collaborators/%d" % (pid, user.id), json={"role": role})
    assert r.status_code == 200, r.text


def _audit(api: Api, action: str) -> list:
    with api.db.session() as s:
        return [(e.actor, e.detail) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id))]


# --- jobs ------------------------------------------------------------------------------------

@pytest.fixture
def owner_jobs(api: Api) -> Iterator[Jobs]:
    """The scheduler ticks only when the test says so, on a frozen clock."""
    j = start_jobs(api, threaded=False, user=api.user("alice"))
    j.clock.frozen = utcnow().replace(second=0, microsecond=0) + dt.timedelta(seconds=10)
    yield j
    scheduler.stop(api.client.app.state.server)


def test_scheduled_runs_act_as_whoever_last_changed_what_the_job_runs(owner_jobs: Jobs) -> None:
    j = owner_jobs
    mallory, oscar = j.api.user("mallory"), j.api.user("oscar")
    _add(j.api, j.client, j.project_id, mallory, "contributor")
    _add(j.api, j.client, j.project_id, oscar, "operator")
    mc, oc = j.api.client_for(mallory), j.api.client_for(oscar)
    j.script("nightly.py", WHO)
    job = j.create(name="nightly", script="nightly.py", schedule="* * * * *")
    assert (job["created_by"], job["run_as"]) == ("alice", "alice") and job["run_as_since"]
    url = j.base + "/jobs/%d" % job["id"]

    # the attack: the Contributor points the owner's job at a script of their own
    r = mc.put(j.base + "/files/content", json={"path": "mine.py",
                                                "content": WHO + "print('evil')\n"})
    assert r.status_code == 200, r.text
    r = mc.patch(url, json={"script": "mine.py"})
    assert r.status_code == 200, r.text
    assert (r.json()["created_by"], r.json()["run_as"]) == ("alice", "mallory")
    since = r.json()["run_as_since"]
    assert since.startswith(j.clock().strftime("%Y-%m-%d"))
    # audited: who took it over from whom
    assert _audit(j.api, "job.run_as")[-1] == ("mallory", {
        "job_id": job["id"], "previous": "alice", "run_as": "mallory"})
    # renaming it or changing its mail is no change of what it runs; nor is a PATCH that
    # sends what the job already has (the web form sends every field)
    for body in ({"name": "nightly-2"}, {"recipients": ["a@example.com"]},
                 {"script": "mine.py", "schedule": "* * * * *"}):
        r = j.client.patch(url, json=body)
        assert r.status_code == 200 and r.json()["run_as"] == "mallory", (body, r.text)
        assert r.json()["run_as_since"] == since
    # the job page says so
    page = j.client.get("/projects/%d/jobs/%d" % (j.project_id, job["id"]))
    assert page.status_code == 200
    assert "runs as <strong>mallory</strong> since %s" % since[:10] in page.text, page.text

    # the owner's scheduled run acts as the Contributor, never as the owner
    j.clock.advance(minutes=1)
    j.sched.tick()
    [run] = j.runs(job["id"])
    assert run["trigger"] == "schedule" and run["run_as"] == "mallory", run
    assert j.wait(job["id"], run["id"], tick=True)["status"] == "succeeded"
    assert j.log(job["id"], run["id"]) == "user mallory mallory\nevil\n"

    # manual runs act as whoever starts them: the Contributor, an Operator, the owner
    for client, name in ((mc, "mallory"), (oc, "oscar"), (j.client, "alice")):
        r = client.post(url + "/runs")
        assert r.status_code == 201, r.text
        assert r.json()["run_as"] == name and r.json()["triggered_by"] == name
        assert j.wait(job["id"], r.json()["id"], tick=True)["status"] == "succeeded"
        assert j.log(job["id"], r.json()["id"]).startswith("user %s %s\n" % (name, name))

    # the owner takes the job back by changing what it runs
    r = j.client.patch(url, json={"script": "nightly.py"})
    assert r.json()["run_as"] == "alice"
    # a scheduled run whose person was deactivated does not start as anybody
    r = mc.patch(url, json={"arguments": "--x"})
    assert r.json()["run_as"] == "mallory"
    with j.api.db.session() as s:
        s.get(User, mallory.id).is_active = False
    j.clock.advance(minutes=1)
    j.sched.tick()
    latest = j.wait(job["id"], j.runs(job["id"])[0]["id"], tick=True)
    assert latest["trigger"] == "schedule" and latest["status"] == "failed", latest
    assert "mallory, whose account is deactivated" in latest["reason"]
    assert j.log(job["id"], latest["id"]).startswith("job nightly-2 runs as mallory")


def test_a_dependent_run_acts_as_its_own_jobs_person_not_the_parents(owner_jobs: Jobs) -> None:
    j = owner_jobs
    mallory = j.api.user("mallory")
    _add(j.api, j.client, j.project_id, mallory, "contributor")
    mc = j.api.client_for(mallory)
    j.script("parent.py", WHO)
    j.script("child.py", WHO)
    parent = j.create(name="parent", script="parent.py")
    child = j.create(name="child", script="child.py", parent_job_id=parent["id"])
    # the Contributor changes the parent's arguments: runs of the parent act as mallory, but
    # the owner's child still acts as the owner
    assert mc.patch(j.base + "/jobs/%d" % parent["id"],
                    json={"arguments": "x"}).json()["run_as"] == "mallory"
    first = mc.post(j.base + "/jobs/%d/runs" % parent["id"]).json()
    assert j.wait(parent["id"], first["id"], tick=True)["status"] == "succeeded"
    [queued] = j.runs(child["id"])
    child_run = j.wait(child["id"], queued["id"], tick=True)
    assert child_run["trigger"] == "parent" and child_run["run_as"] == "alice", child_run
    assert j.log(child["id"], child_run["id"]) == "user alice alice\n"
    # re-parenting is a change of what the child runs: now it acts as whoever re-parented it
    other = j.create(name="other", script="parent.py")
    r = mc.patch(j.base + "/jobs/%d" % child["id"], json={"parent_job_id": other["id"]})
    assert r.status_code == 200 and r.json()["run_as"] == "mallory", r.text


def test_a_contributor_who_rewrites_the_owners_script_never_runs_it_as_the_owner(
        owner_jobs: Jobs) -> None:
    """The attack: leave the job alone and change the file it runs (the file editor here; a
    session or git would do the same). Scheduled and dependent runs run only the version their
    person saved."""
    j = owner_jobs
    mallory = j.api.user("mallory")
    _add(j.api, j.client, j.project_id, mallory, "contributor")
    mc = j.api.client_for(mallory)
    j.script("nightly.py", WHO)
    j.script("child.py", WHO)
    job = j.create(name="nightly", script="nightly.py", schedule="* * * * *")
    child = j.create(name="child", script="child.py", parent_job_id=job["id"])
    url = j.base + "/jobs/%d" % job["id"]
    assert j.client.get(url).json()["script_changed"] is False
    for name in ("nightly.py", "child.py"):
        r = mc.put(j.base + "/files/content", json={"path": name,
                                                    "content": WHO + "print('evil')\n"})
        assert r.status_code == 200, r.text
    # the job and its page say so; the job itself was not touched
    got = j.client.get(url).json()
    assert (got["run_as"], got["script_changed"]) == ("alice", True), got
    page = j.client.get("/projects/%d/jobs/%d" % (j.project_id, job["id"]))
    assert 'id="script-changed"' in page.text and "nightly.py changed since alice saved" \
        in page.text

    # the scheduled run is refused before any engine starts: nothing of mallory's ran as alice
    j.clock.advance(minutes=1)
    j.sched.tick()
    [run] = j.runs(job["id"])
    run = j.wait(job["id"], run["id"], tick=True)
    assert (run["trigger"], run["run_as"], run["status"]) == ("schedule", "alice", "failed"), run
    assert run["reason"].startswith("job nightly: nightly.py changed since alice saved the job; "
                                    "its scheduled runs act as alice"), run["reason"]
    assert "evil" not in j.log(job["id"], run["id"]) and "user" not in j.log(job["id"], run["id"])
    with j.api.db.session() as s:
        assert s.get(JobRun, run["id"]).workload_id is None

    # a run a person starts runs the file as it is, as that person
    mine = mc.post(url + "/runs").json()
    assert j.wait(job["id"], mine["id"], tick=True)["status"] == "succeeded"
    assert j.log(job["id"], mine["id"]) == "user mallory mallory\nevil\n"
    # ... and its dependent run (alice's child, rewritten too) is refused the same way
    [dependent] = j.runs(child["id"])
    dependent = j.wait(child["id"], dependent["id"], tick=True)
    assert (dependent["trigger"], dependent["run_as"], dependent["status"]) == (
        "parent", "alice", "failed"), dependent
    assert "child.py changed since alice saved the job; its dependent runs" in dependent["reason"]

    # mallory saving the job approves the new version as mallory: runs act as mallory
    r = mc.patch(j.base + "/jobs/%d" % child["id"], json={})
    assert (r.json()["run_as"], r.json()["script_changed"]) == ("mallory", None), r.text
    # alice reads the change and saves her job: the version she saved runs, as alice
    r = j.client.patch(url, json={})
    assert r.json()["run_as"] == "alice" and j.client.get(url).json()["script_changed"] is False
    j.clock.advance(minutes=1)
    j.sched.tick()
    latest = j.wait(job["id"], j.runs(job["id"])[0]["id"], tick=True)
    assert (latest["trigger"], latest["status"]) == ("schedule", "succeeded"), latest
    assert j.log(job["id"], latest["id"]) == "user alice alice\nevil\n"
    [dependent, _] = j.runs(child["id"])  # newest first
    dependent = j.wait(child["id"], dependent["id"], tick=True)
    assert (dependent["run_as"], dependent["status"]) == ("mallory", "succeeded"), dependent
    assert j.log(child["id"], dependent["id"]) == "user mallory mallory\nevil\n"


def test_the_jobs_person_editing_its_script_in_the_editor_approves_only_their_own_edit(
        owner_jobs: Jobs) -> None:
    """alice edits her job's script in the file editor (or uploads it): her next scheduled run
    runs it, as alice, with no approval step. mallory's edit still stops the job, and alice editing on top
    of mallory's change does not approve it: that takes the job page."""
    j = owner_jobs
    mallory, mc, job = _nightly_and_mallory(j)
    url = j.base + "/jobs/%d" % job["id"]

    def edit(client: httpx.Client, content: str) -> None:
        r = client.put(j.base + "/files/content", json={"path": "./nightly.py",
                                                        "content": content})
        assert r.status_code == 200, r.text

    def scheduled_run() -> Dict[str, Any]:
        return _next_scheduled_run(j, job["id"])

    edit(j.client, WHO + "print('v2')\n")
    assert j.client.get(url).json()["script_changed"] is False
    run = scheduled_run()
    assert (run["run_as"], run["status"]) == ("alice", "succeeded"), run
    assert j.log(job["id"], run["id"]) == "user alice alice\nv2\n"
    assert _audit(j.api, "job.script.approve")[-1] == ("alice", {
        "job_id": job["id"], "script": "nightly.py", "via": "file editor"})

    edit(mc, WHO + "print('evil')\n")
    edit(j.client, WHO + "print('evil')\nprint('v3')\n")  # alice's edit over mallory's
    assert j.client.get(url).json()["script_changed"] is True
    run = scheduled_run()
    assert run["status"] == "failed" and "changed since alice saved" in run["reason"], run
    assert len(_audit(j.api, "job.script.approve")) == 1
    # the job page's approval, then her own edits approve themselves again
    assert j.client.patch(url, json={}).status_code == 200
    assert j.client.get(url).json()["script_changed"] is False
    edit(j.client, WHO + "print('v4')\n")
    run = scheduled_run()
    assert (run["status"], j.log(job["id"], run["id"])) == ("succeeded", "user alice alice\nv4\n")
    # an upload of the file is a save with the workbench's file tools too
    r = j.client.post(j.base + "/files/upload", files={
        "files": ("nightly.py", (WHO + "print('v5')\n").encode(), "text/x-python")})
    assert r.status_code == 201, r.text
    run = scheduled_run()
    assert (run["status"], j.log(job["id"], run["id"])) == ("succeeded", "user alice alice\nv5\n")
    assert _audit(j.api, "job.script.approve")[-1][1]["via"] == "upload"
    r = mc.post(j.base + "/files/upload", files={
        "files": ("nightly.py", (WHO + "print('evil')\n").encode(), "text/x-python")})
    assert r.status_code == 201 and j.client.get(url).json()["script_changed"] is True


def test_the_jobs_person_saving_its_script_in_jupyterlab_approves_only_their_own_save(
        owner_jobs: Jobs) -> None:
    """A save in JupyterLab passes through the master's session proxy (PUT .../engine/api/
    contents/PATH): alice saving her job's script in her session approves her version, as the
    file editor does. mallory saving it in her own session, or in alice's session shared with
    her, approves nothing, and neither does alice saving on top of mallory's change. A real
    engine (jupyter_server on the local backend) writes every save."""
    j = owner_jobs
    mallory, mc, job = _nightly_and_mallory(j)
    url = j.base + "/jobs/%d" % job["id"]

    def session(client: httpx.Client) -> int:
        r = client.post(j.base + "/sessions", json={})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        deadline = time.monotonic() + 90
        while (s := client.get("/api/v1/sessions/%d" % sid).json())["status"] != "running":
            assert s["status"] in ("scheduling", "starting") and time.monotonic() < deadline, s
            time.sleep(0.3)
        return sid

    keys = {j.client: j.api.key_client(j.user), mc: j.api.key_client(mallory)}

    def save(client: httpx.Client, sid: int, content: str, fmt: str = "text") -> None:
        """What JupyterLab's save sends (with an API key: the engine origin's cookie is
        test_engine_origin.py's)."""
        if fmt == "base64":
            content = base64.b64encode(content.encode()).decode()
        r = keys[client].put("/api/v1/sessions/%d/engine/api/contents/nightly.py" % sid,
                       json={"type": "file", "format": fmt, "content": content})
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "nightly.py"

    def scheduled_run() -> Dict[str, Any]:
        return _next_scheduled_run(j, job["id"])

    alice_sid, mallory_sid = session(j.client), session(mc)
    save(j.client, alice_sid, WHO + "print('v2')\n")
    saved = j.api.settings.projects_dir / str(j.project_id) / "nightly.py"
    assert saved.read_text() == WHO + "print('v2')\n"  # the engine wrote it
    assert j.client.get(url).json()["script_changed"] is False
    run = scheduled_run()
    assert (run["run_as"], run["status"]) == ("alice", "succeeded"), run
    assert j.log(job["id"], run["id"]) == "user alice alice\nv2\n"
    assert _audit(j.api, "job.script.approve")[-1] == ("alice", {
        "job_id": job["id"], "script": "nightly.py", "via": "JupyterLab"})
    save(j.client, alice_sid, WHO + "print('v3')\n", fmt="base64")
    assert j.client.get(url).json()["script_changed"] is False

    save(mc, mallory_sid, WHO + "print('evil')\n")
    assert j.client.get(url).json()["script_changed"] is True
    save(j.client, alice_sid, WHO + "print('evil')\nprint('v4')\n")  # over mallory's change
    assert j.client.get(url).json()["script_changed"] is True
    run = scheduled_run()
    assert run["status"] == "failed" and "changed since alice saved" in run["reason"], run
    # alice lends mallory her session: mallory's save there is still mallory's
    assert j.client.patch(url, json={}).status_code == 200
    r = j.client.put("/api/v1/sessions/%d/shares/%d" % (alice_sid, mallory.id),
                     json={"mode": "interactive"})
    assert r.status_code == 200, r.text
    save(mc, alice_sid, WHO + "print('evil again')\n")
    assert j.client.get(url).json()["script_changed"] is True
    assert [a for a, _ in _audit(j.api, "job.script.approve")] == ["alice", "alice"]


def test_a_job_saved_before_script_digests_records_the_version_its_next_run_runs(
        owner_jobs: Jobs) -> None:
    """Jobs from before migration 0013 have no digest: their next scheduled run runs the script
    as before and records it; a later change is refused like any other."""
    j = owner_jobs
    j.script("nightly.py", WHO)
    job = j.create(name="nightly", script="nightly.py", schedule="* * * * *")
    with j.api.db.session() as s:
        s.get(Job, job["id"]).script_sha256 = None
    j.script("nightly.py", WHO + "print('v2')\n")
    j.clock.advance(minutes=1)
    j.sched.tick()
    first = j.wait(job["id"], j.runs(job["id"])[0]["id"], tick=True)
    assert first["status"] == "succeeded" and j.log(job["id"], first["id"]).endswith("v2\n")
    j.script("nightly.py", WHO + "print('v3')\n")
    j.clock.advance(minutes=1)
    j.sched.tick()
    second = j.wait(job["id"], j.runs(job["id"])[0]["id"], tick=True)
    assert second["status"] == "failed" and "changed since alice saved" in second["reason"]


def test_an_experiment_acts_as_whoever_started_it(api: Api) -> None:
    e = start_experiments(api, user=api.user("alice"))
    try:
        mallory = api.user("mallory")
        _add(api, e.client, e.project_id, mallory, "contributor")
        e.file("who.py", WHO)
        for client, name in ((api.client_for(mallory), "mallory"), (e.client, "alice")):
            run = e.start(client, script="who.py")
            assert e.wait(run["id"])["status"] == "succeeded"
            assert e.log(run["id"]) == "user %s %s\n" % (name, name)
    finally:
        scheduler.stop(api.client.app.state.server)


def test_a_collaborators_files_named_like_start_up_files_do_not_run_in_anothers_runs(
        api: Api) -> None:
    """The attack without touching the script: plant files the interpreter would load on its
    own. Plain `python3 fit.py` imported a json.py next to the script instead of the standard
    library's; `Rscript fit.R` read the project's .Rprofile. Neither runs in alice's runs."""
    e = start_experiments(api, user=api.user("alice"))
    try:
        mallory = api.user("mallory")
        _add(api, e.client, e.project_id, mallory, "contributor")
        mc = api.client_for(mallory)
        for path, content in (("json.py", "print('EVIL json.py as', __import__('os').environ"
                                          "['CDSW_USER'])\n"),
                              (".Rprofile", 'cat("EVIL .Rprofile as", Sys.getenv("CDSW_USER"), '
                                            '"\\n")\n'),
                              (".Renviron", "R_DEFAULT_PACKAGES=EVIL\n")):
            r = mc.put("/api/v1/projects/%d/files/content" % e.project_id,
                       json={"path": path, "content": content})
            assert r.status_code == 200, r.text
        e.file("fit.py", "import json\nprint(json.dumps(['fit', 1]))\n")
        e.file("fit.R", 'cat("R fit", Sys.getenv("CDSW_USER"), "\\n")\n')
        for script, expected in (("fit.py", '["fit", 1]\n'), ("fit.R", "R fit alice \n")):
            run = e.start(e.client, script=script)
            done = e.wait(run["id"])
            assert done["status"] == "succeeded", (done, e.log(run["id"]))
            assert e.log(run["id"]) == expected
    finally:
        scheduler.stop(api.client.app.state.server)


# --- models ----------------------------------------------------------------------------------

MODEL_PY = """
import os

def who(args):
    return {"user": os.environ.get("HADOOP_USER_NAME"), "cdsw_user": os.environ.get("CDSW_USER"),
            "secret": os.environ.get("PROJECT_SECRET")}
"""

BUILD_SH = "env > build-env.txt\n"


@pytest.fixture
def models(api: Api) -> Iterator[Models]:
    m = start_models(api, user=api.user("alice"))
    yield m
    stop_all(m)


def test_replicas_act_as_their_last_deployer_and_builds_as_nobody(
        models: Models, monkeypatch: pytest.MonkeyPatch) -> None:
    m = models
    mallory = m.api.user("mallory")
    _add(m.api, m.client, m.project_id, mallory, "contributor")
    mc = httpx.Client(base_url=m.master.url, timeout=30,
                      headers={"Authorization": "Bearer " + m.api.api_key(mallory)})
    m.ok(m.client.put("/api/v1/projects/%d/env/PROJECT_SECRET" % m.project_id,
                      json={"value": "s3cret", "secret": True}))
    m.file("model.py", MODEL_PY)
    m.file("cdsw-build.sh", BUILD_SH)
    # whatever the master's own environment holds, a build does not get it
    monkeypatch.setenv("HADOOP_USER_NAME", "master-identity")
    monkeypatch.setenv("KRB5CCNAME", "/tmp/krb5cc_master")
    monkeypatch.setenv("CDSW_SOME_SECRET", "master-secret")
    created = m.create(name="who", file="model.py", function="who")
    key, model_id = created["access_key"], created["id"]

    # a build started by the owner acts as nobody
    build = m.build(model_id)
    env_file = Path(m.api.settings.data_dir) / build["artifact"] / "build-env.txt"
    build_env = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                     if "=" in line)
    for name in ("HADOOP_USER_NAME", "CDSW_USER", "KRB5CCNAME", "PROJECT_SECRET",
                 "CDSW_SOME_SECRET", "CDSW_ENGINE_TOKEN", "JUPYTER_TOKEN"):
        assert name not in build_env, (name, build_env)
    assert "alice" not in env_file.read_text() and "s3cret" not in env_file.read_text()
    assert build_env["HOME"] == str(env_file.parent) and build_env.get("CDSW_BUILD") == "1"

    # deployed by the owner: its replica acts as the owner (and gets the project's variables)
    dep = m.deploy(model_id, replicas=1)
    assert (dep["created_by"], dep["deployed_by"]) == ("alice", "alice")
    m.wait_deployment(model_id, ready(1), "1 ready replica")
    answer = m.call(key, {}).json()["response"]
    assert answer == {"user": "alice", "cdsw_user": "alice", "secret": "s3cret"}, answer

    # the Contributor redeploys the same build: the replicas are replaced and act as them
    r = mc.post("%s/%d/deployment/redeploy" % (m.base, model_id), json={})
    assert r.status_code == 200 and r.json()["deployed_by"] == "mallory", r.text
    done = m.wait_deployment(
        model_id, lambda d: ready(1)(d) and all(x["run_as"] == "mallory" for x in
                                                d["replica_states"] if x["state"] == "ready"),
        "the replica redeployed by mallory")
    assert done["deployment"]["created_by"] == "alice"
    assert m.call(key, {}).json()["response"]["user"] == "mallory"
    [(actor, detail)] = [e for e in _audit(m.api, "model.redeploy")]
    assert actor == "mallory" and detail["deployed_by_id"] == mallory.id
    page = m.client.get("/projects/%d/models/%d" % (m.project_id, model_id))
    assert page.status_code == 200 and "deployed by mallory" in page.text
    # scaling is no new deployment: new replicas still act as the last deployer
    m.ok(m.client.post("%s/%d/deployment/scale" % (m.base, model_id), json={"replicas": 2}))
    scaled = m.wait_deployment(model_id, ready(2), "2 ready replicas")
    assert [x["run_as"] for x in scaled["deployment"]["replica_states"]] == ["mallory"] * 2
    mc.close()


# --- project transfer ------------------------------------------------------------------------

def test_only_the_owner_or_a_site_admin_transfers_and_the_owner_stays_admin(api: Api) -> None:
    alice, mallory, bob = api.user("alice"), api.user("mallory"), api.user("bob")
    root = api.user("root", admin=True)
    ac, mc, rc = api.client_for(alice), api.client_for(mallory), api.client_for(root)
    pid = ac.post("/api/v1/projects", json={"name": "crown"}).json()["id"]
    _add(api, ac, pid, mallory, "admin")
    _add(api, ac, pid, bob, "viewer")
    url = "/api/v1/projects/%d" % pid
    # an Admin collaborator may change almost anything, but not take the project
    for target in (mallory, bob):
        r = mc.post(url + "/transfer", json={"owner_user_id": target.id})
        assert r.status_code == 403, r.text
        assert "only the project's owner or a site administrator" in r.json()["error"]
    assert mc.patch(url, json={"description": "still allowed"}).status_code == 200
    assert ac.get(url).json()["owner"]["name"] == "alice"
    # the owner may; they stay an Admin collaborator, and bob (now owner) is no collaborator
    r = ac.post(url + "/transfer", json={"owner_user_id": bob.id})
    assert r.status_code == 200 and r.json()["owner"]["name"] == "bob", r.text
    roles = {c["username"]: c["role"] for c in ac.get(url + "/collaborators").json()}
    assert roles == {"alice": "admin", "mallory": "admin"}
    assert ac.get(url).json()["your_role"] == "admin"
    # ... and, no longer the owner, may not transfer it back; a site administrator may
    assert ac.post(url + "/transfer", json={"owner_user_id": alice.id}).status_code == 403
    r = rc.post(url + "/transfer", json={"owner_user_id": alice.id})
    assert r.status_code == 200 and r.json()["owner"]["name"] == "alice", r.text
    roles = {c["username"]: c["role"] for c in ac.get(url + "/collaborators").json()}
    assert roles == {"bob": "admin", "mallory": "admin"}
    [*_, (actor, detail)] = _audit(api, "project.transfer")
    assert actor == "root" and detail["previous_owner_user_id"] == bob.id


# --- session sharing -------------------------------------------------------------------------

def _session_world(tmp: Path, **settings: Any) -> Dict[str, Any]:
    api = build_api(make_settings(tmp / "data", **settings))
    owner, friend = api.user("owner"), api.user("friend")
    admin = api.user("root", admin=True)
    oc = api.key_client(owner)
    pid = oc.post("/api/v1/projects", json={"name": "shared"}).json()["id"]
    _add(api, oc, pid, friend, "contributor")
    with api.db.session() as s:  # a session row is all sharing needs; no engine is started
        row = EngineSession(project_id=pid, user_id=owner.id, name="identity-test-session",
                            kernel="python3", kernelspec="python3", status="stopped")
        s.add(row)
        s.flush()
        sid = row.id
    return {"api": api, "owner": oc, "friend": api.key_client(friend),
            "admin": api.key_client(admin), "friend_id": friend.id, "sid": sid}


def test_sharing_is_refused_when_the_site_forbids_it(tmp_path: Path) -> None:
    w = _session_world(tmp_path / "plain")
    base = "/api/v1/sessions/%d" % w["sid"]
    settings_url = "/api/v1/admin/settings"
    assert w["admin"].get(settings_url).json()["session_sharing_allowed"] is True
    # allowed by default: the owner lends their session (audited), the friend reads it
    r = w["owner"].put(base + "/shares/%d" % w["friend_id"], json={"mode": "view"})
    assert r.status_code == 200, r.text
    assert w["friend"].get(base + "/log").status_code == 200
    # the site forbids sharing: no new share, and existing shares give no access
    r = w["admin"].patch(settings_url, json={"values": {"session_sharing_allowed": False}})
    assert r.status_code == 200 and r.json()["session_sharing_allowed"] is False, r.text
    r = w["owner"].put(base + "/shares/%d" % w["friend_id"], json={"mode": "interactive"})
    assert r.status_code == 403 and "session_sharing_allowed" in r.json()["error"], r.text
    r = w["friend"].get(base + "/log")
    assert r.status_code == 403 and "sharing is turned off" in r.json()["error"], r.text
    assert w["owner"].get(base + "/log").status_code == 200  # the owner is not affected
    with w["api"].db.session() as s:
        assert s.get(SessionShare, (w["sid"], w["friend_id"])).mode == "view"  # unchanged
    w["api"].db.engine.dispose()


def test_kerberos_forbids_sharing_by_default(tmp_path: Path) -> None:
    w = _session_world(tmp_path / "krb", kerberos_enabled=True)
    base = "/api/v1/sessions/%d" % w["sid"]
    assert w["admin"].get("/api/v1/admin/settings").json()["session_sharing_allowed"] is False
    r = w["owner"].put(base + "/shares/%d" % w["friend_id"], json={"mode": "view"})
    assert r.status_code == 403, r.text
    # a site administrator may still allow it explicitly
    w["admin"].patch("/api/v1/admin/settings", json={"values": {"session_sharing_allowed": True}})
    r = w["owner"].put(base + "/shares/%d" % w["friend_id"], json={"mode": "view"})
    assert r.status_code == 200, r.text
    w["api"].db.engine.dispose()
