"""The MLflow tracking API (/mlflow) with the real `mlflow` client (mlflow-skinny): from outside
through a real uvicorn master, and from inside an experiment engine on the local backend with no
configuration; its runs are workbench experiment runs; the project's permissions hold.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import mlflow  # the test extra installs the client, mlflow-skinny
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cdsw_agent.server import scheduler

from ..conftest import Api, build_api, make_settings
from .test_experiments_api import start_experiments
from .test_models_api import Master



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    # the engines' MLFLOW_TRACKING_URI is the master's address (master_host:http_port)
    port = _free_port()
    api = build_api(make_settings(tmp_path / "data", http_port=port))
    m = Master.__new__(Master)  # Master picks its own port: serve on ours instead
    _serve(m, api, port)
    yield m
    m.stop()
    api.db.engine.dispose()


def _serve(m: Master, api: Api, port: int) -> None:
    import threading
    import time

    import uvicorn

    from cdsw_agent.server.app import create_app

    m.api, m.port = api, port
    m.app = create_app(api.settings, api.db)
    m.server = uvicorn.Server(uvicorn.Config(m.app, host="127.0.0.1", port=port,
                                             log_level="warning", lifespan="on"))
    m.thread = threading.Thread(target=m.server.run, daemon=True)
    m.thread.start()
    deadline = time.monotonic() + 20
    while not m.server.started:
        assert time.monotonic() < deadline and m.thread.is_alive(), "master did not start"
        time.sleep(0.02)
    m.url = "http://127.0.0.1:%d" % port


@pytest.fixture
def as_key(master: Master, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Points the mlflow client at the master with an API key; returns an MlflowClient."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", master.url + "/mlflow")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    def use(key: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
        return MlflowClient()

    # the client keeps each run's artifact repository, with the tracking address it was made
    # with, by run id: every test's master numbers its runs from 1 on another port
    from mlflow.tracking._tracking_service import utils as tracking_utils
    tracking_utils._artifact_repos_cache.clear()
    return use


def _project(api: Api, owner: Any, name: str) -> Dict[str, Any]:
    c = api.client_for(owner)
    r = c.post("/api/v1/projects", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def _code(e: Any) -> str:
    return e.value.error_code


def test_mlflow_client_tracks_into_a_projects_experiments(master: Master, as_key: Any,
                                                          tmp_path: Path) -> None:
    api = master.api
    owner = api.user("alice")
    project = _project(api, owner, "tracking")
    client = as_key(api.api_key(owner))

    # an experiment is named after its project; a name that names none is refused
    with pytest.raises(MlflowException) as e:
        client.create_experiment("no-such-owner/nothing")
    assert _code(e) == "INVALID_PARAMETER_VALUE" and "OWNER/PROJECT" in str(e.value)
    exp_id = client.create_experiment("alice/tracking/tuning", tags={"team": "ds"})
    exp = client.get_experiment_by_name("alice/tracking/tuning")
    assert exp.experiment_id == exp_id and exp.tags == {"team": "ds"}
    assert client.get_experiment_by_name("alice/tracking/absent") is None
    with pytest.raises(MlflowException) as e:
        client.create_experiment("alice/tracking/tuning")
    assert _code(e) == "RESOURCE_ALREADY_EXISTS"

    # the fluent API: a run with params, metrics over steps, tags, a batch and an artifact
    artifact = tmp_path / "model" / "weights.txt"
    artifact.parent.mkdir()
    artifact.write_text("w=1.5\n")
    mlflow.set_experiment("alice/tracking/tuning")
    with mlflow.start_run(run_name="first") as run:
        mlflow.log_param("lr", "0.1")
        for step, loss in enumerate([0.9, 0.5, 0.3, 0.2]):
            mlflow.log_metric("loss", loss, step=step)
        mlflow.set_tag("stage", "dev")
        mlflow.log_metrics({"acc": 0.75, "f1": 0.7}, step=3)
        mlflow.log_params({"epochs": 4, "optimizer": "sgd"})
        mlflow.log_artifact(str(artifact), artifact_path="model")
    run_id = run.info.run_id
    with mlflow.start_run(run_name="second"):
        mlflow.log_param("lr", "0.5")
        mlflow.log_metric("loss", 1.5)
    client.log_batch(run_id, metrics=[], params=[], tags=[
        mlflow.entities.RunTag("reviewed", "yes")])

    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "first"
    assert got.info.artifact_uri == "mlflow-artifacts:/%s/%s/artifacts" % (exp_id, run_id)
    assert got.data.params == {"lr": "0.1", "epochs": "4", "optimizer": "sgd"}
    assert got.data.metrics == {"loss": 0.2, "acc": 0.75, "f1": 0.7}
    assert got.data.tags["stage"] == "dev" and got.data.tags["reviewed"] == "yes"
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.3), (3, 0.2)]
    with pytest.raises(MlflowException) as e:  # params do not change
        client.log_param(run_id, "lr", "0.2")
    assert _code(e) == "INVALID_PARAMETER_VALUE"

    # search
    found = client.search_runs([exp_id], "metrics.loss < 1 and params.lr = '0.1'")
    assert [r.info.run_id for r in found] == [run_id]
    ordered = client.search_runs([exp_id], order_by=["metrics.loss DESC"])
    assert [r.info.run_name for r in ordered] == ["second", "first"]
    assert [r.info.run_name for r in client.search_runs([exp_id], "tags.stage = 'dev'")] \
        == ["first"]
    assert "alice/tracking/tuning" in [x.name for x in client.search_experiments()]

    # artifacts: listed and downloaded through the proxied artifact API
    assert [f.path for f in client.list_artifacts(run_id)] == ["model"]
    assert [f.path for f in client.list_artifacts(run_id, "model")] == ["model/weights.txt"]
    dest = tmp_path / "down"
    dest.mkdir()
    local = client.download_artifacts(run_id, "model/weights.txt", str(dest))
    assert Path(local).read_text() == "w=1.5\n"

    # the runs are the project's experiment runs, beside the script runs
    web = api.key_client(owner)
    runs = web.get("/api/v1/projects/%d/experiments" % project["id"]).json()
    mine = {r["id"]: r for r in runs}
    assert set(mine) >= {int(run_id)}
    assert mine[int(run_id)]["status"] == "succeeded"
    assert mine[int(run_id)]["metrics"]["loss"] == 0.2
    assert mine[int(run_id)]["files"] == [{"path": "model/weights.txt", "size": 6}]
    detail = web.get("/api/v1/projects/%d/experiments/%s" % (project["id"], run_id)).json()
    assert detail["tracker"] == "mlflow"
    assert detail["metric_history"]["loss"] == [0.9, 0.5, 0.3, 0.2]
    assert detail["metric_steps"]["loss"] == [[0, 0.9], [1, 0.5], [2, 0.3], [3, 0.2]]
    # its page draws the metrics over their steps (our own SVG script, no CDN)
    import json
    import re
    html = api.client_for(owner).get("/projects/%d/experiments/%s" % (project["id"], run_id))
    assert html.status_code == 200 and "MLflow" in html.text
    assert '<script src="/static/js/metric_charts.js" defer>' in html.text
    series = json.loads(re.search(r'id="metric-steps">(.*?)</script>', html.text).group(1))
    assert series["loss"] == [[0, 0.9], [1, 0.5], [2, 0.3], [3, 0.2]]
    assert "createElementNS" in api.client.get("/static/js/metric_charts.js").text
    r = web.get("/api/v1/projects/%d/experiments/%s/download" % (project["id"], run_id),
                params={"file": "model/weights.txt"})
    assert r.status_code == 200 and r.text == "w=1.5\n"

    # deleting a run hides it from searches, not from ALL
    client.delete_run(run_id)
    assert [r.info.run_name for r in client.search_runs([exp_id])] == ["second"]
    assert len(client.search_runs([exp_id], run_view_type=mlflow.entities.ViewType.ALL)) == 2


def test_mlflow_permissions_are_the_projects(master: Master, as_key: Any) -> None:
    api = master.api
    owner, viewer, stranger, contrib = (api.user(n) for n in ("olga", "vic", "sam", "cora"))
    project = _project(api, owner, "secret")
    owner_c = api.client_for(owner)
    for u, role in ((viewer, "viewer"), (contrib, "contributor")):
        r = owner_c.put("/api/v1/projects/%d/collaborators/%d" % (project["id"], u.id),
                        json={"role": role})
        assert r.status_code == 200, r.text
    mine = as_key(api.api_key(owner))
    exp_id = mine.create_experiment("olga/secret")
    run_id = mine.create_run(exp_id).info.run_id
    mine.log_metric(run_id, "acc", 0.5, step=1)

    # a viewer reads, and cannot write
    v = as_key(api.api_key(viewer))
    assert v.get_experiment(exp_id).name == "olga/secret"
    assert v.get_run(run_id).data.metrics == {"acc": 0.5}
    assert len(v.search_runs([exp_id])) == 1
    for write in (lambda: v.log_metric(run_id, "acc", 0.9),
                  lambda: v.create_run(exp_id),
                  lambda: v.create_experiment("olga/secret/mine"),
                  lambda: v.set_terminated(run_id)):
        with pytest.raises(MlflowException) as e:
            write()
        assert _code(e) == "PERMISSION_DENIED", e.value

    # a contributor writes
    c = as_key(api.api_key(contrib))
    c.log_metric(run_id, "acc", 0.6, step=2)
    assert c.create_experiment("olga/secret/cora").isdigit()

    # a read-scoped key of the owner searches (POST) but cannot write
    r_only = as_key(api.api_key(owner, scope="read"))
    assert len(r_only.search_runs([exp_id])) == 1
    with pytest.raises(MlflowException):
        r_only.log_metric(run_id, "acc", 0.1)

    # another project's experiment is invisible to a stranger
    s = as_key(api.api_key(stranger))
    for read in (lambda: s.get_experiment(exp_id), lambda: s.get_run(run_id),
                 lambda: s.search_runs([exp_id]), lambda: s.log_metric(run_id, "acc", 1.0),
                 lambda: s.get_metric_history(run_id, "acc")):
        with pytest.raises(MlflowException) as e:
            read()
        assert _code(e) == "RESOURCE_DOES_NOT_EXIST", e.value
    assert s.get_experiment_by_name("olga/secret") is None
    assert s.search_experiments() == []
    with pytest.raises(MlflowException) as e:  # nor can one be made in its name
        s.create_experiment("olga/secret/intruder")
    assert _code(e) == "INVALID_PARAMETER_VALUE"
    _project(api, stranger, "own")
    assert s.create_experiment("sam/own").isdigit()

    # the error shape is MLflow's (and ours), and without a key nothing answers
    import requests
    r = requests.get(master.url + "/mlflow/api/2.0/mlflow/experiments/get",
                     params={"experiment_id": exp_id},
                     headers={"Authorization": "Bearer " + api.api_key(stranger)})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    r = requests.get(master.url + "/mlflow/api/2.0/mlflow/experiments/get",
                     params={"experiment_id": exp_id})
    assert r.status_code == 401
    r = requests.get(master.url + "/mlflow/api/2.0/mlflow-artifacts/artifacts/%s/%s/artifacts/x"
                     % (exp_id, run_id),
                     headers={"Authorization": "Bearer " + api.api_key(stranger)})
    assert r.status_code == 404


ENGINE_SCRIPT = """
import mlflow
mlflow.log_param("alpha", "0.3")
for step in range(3):
    mlflow.log_metric("score", step * 0.25, step=step)
mlflow.set_tag("from", "engine")
mlflow.log_text("hello from the engine", "notes/hello.txt")
print("logged", mlflow.active_run().info.run_id)
"""


def test_an_engines_tracking_token_reaches_mlflow_and_nothing_else(master: Master, as_key: Any,
                                                                    tmp_path: Path) -> None:
    """The token sits in the engine's environment, where a printed environment or a notebook
    output saved in the project shows it to collaborators: it logs runs and artifacts as its
    user, and is refused everywhere else of that user's."""
    import requests

    from cdsw_agent.experiments import mlflow_engine
    from cdsw_agent.store.models import Project

    api = master.api
    owner = api.user("alice")
    project = _project(api, owner, "scoped")
    with api.db.session() as s:
        env = mlflow_engine.variables(s, api.settings, "session", "s1",
                                      s.get(Project, project["id"]), owner)
    token = env["MLFLOW_TRACKING_TOKEN"]
    client = as_key(token)
    exp_id = client.create_experiment("alice/scoped/engine")
    run = client.create_run(exp_id)
    client.log_metric(run.info.run_id, "m", 1.0)
    (tmp_path / "a.txt").write_text("artifact\n")
    client.log_artifact(run.info.run_id, str(tmp_path / "a.txt"))
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["a.txt"]
    bearer = {"Authorization": "Bearer " + token}
    for method, path, body in (
            ("GET", "/api/v1/projects", None),
            ("GET", "/api/v1/account", None),
            ("POST", "/api/v1/account/api-keys", {"name": "mine now"}),
            ("PATCH", "/api/v1/projects/%d" % project["id"], {"visibility": "public"}),
            ("GET", "/api/v1/projects/%d/files" % project["id"], None)):
        r = requests.request(method, master.url + path, json=body, headers=bearer, timeout=10)
        assert r.status_code == 403 and "MLflow tracking token" in r.json()["error"], (path, r.text)
    assert api.client_for(owner).get("/api/v1/projects/%d" % project["id"]).json()[
        "visibility"] == "private"


def test_mlflow_works_inside_an_engine_with_no_configuration(master: Master, as_key: Any,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    api = master.api
    # a local engine runs the host's python3: here, the one that has the mlflow client (an
    # engine image would have it installed); nothing about MLflow is configured
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    monkeypatch.setenv("PATH", venv_bin + os.pathsep + os.environ.get("PATH", ""))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    e = start_experiments(api)
    try:
        e.file("train.py", ENGINE_SCRIPT)
        run = e.start(script="train.py")
        done = e.wait(run["id"], timeout=90)
        assert done["status"] == "succeeded", e.log(run["id"])
        monkeypatch.setenv("MLFLOW_TRACKING_URI", master.url + "/mlflow")
        client = as_key(api.api_key(e.user))
        name = "%s/%s" % (e.user.username, "experiments")
        exp = client.get_experiment_by_name(name)
        assert exp is not None, e.log(run["id"])
        (found,) = client.search_runs([exp.experiment_id])
        assert found.data.params == {"alpha": "0.3"} and found.data.tags["from"] == "engine"
        assert found.info.status == "FINISHED"
        assert [(m.step, m.value) for m in client.get_metric_history(found.info.run_id,
                                                                     "score")] \
            == [(0, 0.0), (1, 0.25), (2, 0.5)]
        assert [f.path for f in client.list_artifacts(found.info.run_id, "notes")] \
            == ["notes/hello.txt"]
        # the engine's run is listed on the project's experiments page beside the script's
        listed = {r["id"]: r for r in e.client.get(e.base).json()}
        assert listed[int(found.info.run_id)]["metrics"] == {"score": 0.5}
        assert listed[run["id"]]["script"] == "train.py"
    finally:
        scheduler.stop(api.client.app.state.server)


def test_mlflow_schema_matches_the_models_and_goes_back(db_url: str) -> None:
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
        assert [d for d in diff if "mlflow" in repr(d) or "tracker" in repr(d)] == []
        command.downgrade(db._alembic_config(), "0008")
        with db.engine.connect() as c:
            assert not {"mlflow_experiments", "mlflow_runs", "mlflow_metrics"} \
                & set(db.engine.dialect.get_table_names(c))
            columns = {col["name"] for col in db.engine.dialect.get_columns(c, "experiment_runs")}
            assert "tracker" not in columns
    finally:
        db.engine.dispose()
