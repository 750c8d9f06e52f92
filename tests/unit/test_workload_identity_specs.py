"""Whom the engines of jobs and model replicas act as, in the workload spec a swarm backend
launches (the local backend runs the same spec; tests/integration/test_workload_identity.py),
and what a model build's environment holds: no user at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest

from cdsw_agent.jobs.launch import workload_spec
from cdsw_agent.models.builds import build_environment, dockerfile
from cdsw_agent.models.replicas import current, replica_spec
from cdsw_agent.orchestrators.base import Orchestrator
from cdsw_agent.settings import Settings
from cdsw_agent.store.db import Database
from cdsw_agent.store.jobs_models import Job, JobRun
from cdsw_agent.store.models import EngineImage, Project, User
from cdsw_agent.store.models_models import Model, ModelBuild, ModelDeployment, ModelReplica

from ..conftest import make_settings


class Swarm(Orchestrator):
    """A backend that is not local (images required, build images served); never called."""

    name = "swarm"

    def nodes(self):  # type: ignore[no-untyped-def]
        raise AssertionError("no placement expected: no client configuration was collected")

    launch = stop = status = logs = list = remove = nodes  # type: ignore[assignment]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Tuple[Settings, Database, Dict[str, int]]]:
    settings = make_settings(tmp_path / "data")
    db = Database(settings.database_url)
    db.upgrade()
    ids: Dict[str, int] = {}
    with db.session() as s:
        alice = User(username="alice", password_hash="x", email="a@example.com")
        mallory = User(username="mallory", password_hash="x", email="m@example.com")
        s.add_all([alice, mallory])
        s.flush()
        project = Project(name="P", slug="p", namespace="u:%d" % alice.id, owner_user_id=alice.id)
        s.add_all([project, EngineImage(repository="cdsw/engine", tag="1", is_default=True)])
        s.flush()
        job = Job(project_id=project.id, name="nightly", script="mine.py", arguments="",
                  env={}, created_by_id=alice.id, run_as_user_id=mallory.id)
        s.add(job)
        s.flush()
        run = JobRun(job_id=job.id, trigger="schedule", status="queued", reason="",
                     run_as_user_id=job.run_as_user_id, log_path="")
        model = Model(project_id=project.id, name="m", description="", file="m.py",
                      function="f", created_by_id=alice.id)
        s.add_all([run, model])
        s.flush()
        build = ModelBuild(model_id=model.id, status="succeeded", file="m.py", function="f",
                           artifact="cdsw/model:m1-b1", created_by_id=alice.id)
        s.add(build)
        s.flush()
        dep = ModelDeployment(model_id=model.id, build_id=build.id, replicas=1,
                              created_by_id=alice.id, deployed_by_id=mallory.id)
        s.add(dep)
        s.flush()
        replica = ModelReplica(deployment_id=dep.id, build_id=build.id, name="model-1-replica-1",
                               port=16001, token="t", run_as_user_id=dep.deployed_by_id)
        s.add(replica)
        s.flush()
        ids.update(project=project.id, job=job.id, run=run.id, replica=replica.id,
                   dep=dep.id, build=build.id, alice=alice.id, mallory=mallory.id)
    (Path(settings.projects_dir) / str(ids["project"])).mkdir(parents=True)
    (Path(settings.projects_dir) / str(ids["project"]) / "mine.py").write_text("print(1)\n")
    yield settings, db, ids
    db.engine.dispose()


def test_a_scheduled_runs_engine_acts_as_the_jobs_last_changer(world: Any) -> None:
    settings, db, ids = world
    with db.session() as s:
        job, run = s.get(Job, ids["job"]), s.get(JobRun, ids["run"])
        spec = workload_spec(s, settings, Swarm(), job, run,
                             Path(settings.projects_dir) / str(ids["project"]), b"print(2)\n")
    assert spec.env["HADOOP_USER_NAME"] == spec.env["CDSW_USER"] == "mallory"
    assert spec.labels["io.cdsw.user"] == str(ids["mallory"])
    # the engine runs the bytes the runner checked, never the project's file: a read-only copy
    # over the script's path and where the kernel runner reads it (jobs/script.py)
    copies = [m for m in spec.mounts if m.source.endswith("/script/mine.py")]
    assert sorted((m.target, m.read_only) for m in copies) == [
        ("/home/cdsw/mine.py", True), ("/run/cdsw/job/mine.py", True)], spec.mounts
    assert Path(copies[0].source).read_bytes() == b"print(2)\n"
    assert Path(copies[0].source).stat().st_mode & 0o777 == 0o444
    assert spec.env["CDSW_JOB_SCRIPT_COPY"] == "/run/cdsw/job/mine.py"
    # after the project mount, so Docker mounts the copy over it
    targets = [m.target for m in spec.mounts]
    assert targets.index("/home/cdsw") < targets.index("/home/cdsw/mine.py")


def test_a_replica_acts_as_its_deployer_not_the_models_creator(world: Any) -> None:
    settings, db, ids = world
    with db.session() as s:
        replica = s.get(ModelReplica, ids["replica"])
        dep, build = s.get(ModelDeployment, ids["dep"]), s.get(ModelBuild, ids["build"])
        spec = replica_spec(s, settings, Swarm(), build, dep, replica)
        assert spec.image == "cdsw/model:m1-b1"
        assert spec.env["HADOOP_USER_NAME"] == spec.env["CDSW_USER"] == "mallory"
        # the owner redeploys: the replica no longer runs what the deployment asks for
        assert current(replica, dep)
        dep.deployed_by_id = ids["alice"]
        assert not current(replica, dep)


def test_a_build_carries_no_user(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "cdsw-build.sh").write_text("pip install x\n")
    text = dockerfile("cdsw/engine:1", files)
    # a Docker build sees only the engine image's environment: nothing names a user
    assert not any(line.split()[0] in ("ENV", "ARG") for line in text.splitlines()), text
    master = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "HADOOP_USER_NAME": "alice",
              "CDSW_USER": "alice", "KRB5CCNAME": "/tmp/krb5cc_0", "CDSW_CLUSTER_SECRET": "s",
              "HADOOP_TOKEN_FILE_LOCATION": "/tmp/t", "JUPYTER_TOKEN": "j", "USER": "cdsw"}
    env = build_environment(make_settings(tmp_path / "data"), files, master)
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "HOME": str(files),
                   "CDSW_BUILD": "1", "PYTHONNOUSERSITE": "1", "NO_PROXY": "127.0.0.1,localhost"}
