"""The MLflow tracking REST API at /mlflow, so MLFLOW_TRACKING_URI=http://MASTER/mlflow works
with the `mlflow` client: experiments, runs, params, metrics with steps, tags, batch logging,
and artifacts through MLflow's proxied artifact API (runs' artifact_uri is mlflow-artifacts:/).

Callers authenticate with a workbench API key as `Authorization: Bearer` (MLFLOW_TRACKING_TOKEN).
What they reach belongs to a project (experiments/mlflow_store.py says how): its viewers read,
its contributors write, and anyone else gets RESOURCE_DOES_NOT_EXIST. Errors answer in MLflow's
shape {"error_code", "message"} (plus our {"error", "detail"}).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Tuple

from fastapi import Body, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ...experiments import launch
from ...experiments import mlflow_store as store
from ...experiments.mlflow_store import MlflowError, invalid, missing
from ...store.mlflow_models import MlflowExperiment, MlflowRun
from ...store.models import Project
from .. import audit
from ..deps import get_db, get_state
from ..errors import ApiError
from ..permissions import Access, api_router, project_access, require, visible_projects
from ..state import ServerState

router = api_router(prefix="/mlflow", tags=["mlflow"])
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MAX_ARTIFACT_BYTES = 1 << 30
JsonBody = Optional[Dict[str, Any]]


def error(e: MlflowError) -> JSONResponse:
    return JSONResponse({"error_code": e.code, "message": e.message, "error": e.message,
                         "detail": None}, status_code=e.status)


def _from_api(e: ApiError, what: str) -> MlflowError:
    if e.status == 404:
        return missing("%s not found" % what)
    return MlflowError("PERMISSION_DENIED", e.error)


def _experiment(db: Session, access: Access, experiment_id: Any, min_role: str
                ) -> MlflowExperiment:
    exp = store.experiment(db, experiment_id)
    what = "experiment %s" % experiment_id
    if exp is None:
        raise missing("%s not found" % what)
    try:
        project_access(db, access.user, exp.project, min_role)
    except ApiError as e:
        raise _from_api(e, what)
    return exp


def _run(db: Session, access: Access, run_id: Any, min_role: str) -> MlflowRun:
    r = store.run(db, run_id)
    what = "run %s" % run_id
    if r is None:
        raise missing("%s not found" % what)
    try:
        project_access(db, access.user, r.experiment.project, min_role)
    except ApiError as e:
        raise _from_api(e, what)
    return r


def _need(body: JsonBody, name: str) -> Any:
    value = (body or {}).get(name)
    if value is None or value == "":
        raise invalid("missing value for required parameter '%s'" % name)
    return value


def _answer(fn: Any) -> Any:
    try:
        return fn()
    except MlflowError as e:
        return error(e)


# --- experiments --------------------------------------------------------------------------

@router.post(API + "/experiments/create")
def create_experiment(request: Request, body: JsonBody = Body(None), db: Session = Depends(get_db),
                      access: Access = require("mlflow.write")) -> Any:
    def go() -> Any:
        name = _need(body, "name")
        if not isinstance(name, str) or len(name) > 500:
            raise invalid("name must be a string of at most 500 characters")
        project = store.project_named(db, name)
        if project is None:
            raise invalid("experiment %s names no project you can see; name it after its "
                          "project: OWNER/PROJECT or OWNER/PROJECT/NAME" % name)
        try:
            project_access(db, access.user, project, "contributor")
        except ApiError as e:
            if e.status == 404:
                raise invalid("experiment %s names no project you can see; name it after its "
                              "project: OWNER/PROJECT or OWNER/PROJECT/NAME" % name)
            raise MlflowError("PERMISSION_DENIED", e.error)
        exp = store.create_experiment(db, project, name, (body or {}).get("tags"))
        audit.record(db, "mlflow.experiment.create", access.user, target=name, request=request,
                     experiment_id=exp.id)
        db.commit()
        return {"experiment_id": str(exp.id)}
    return _answer(go)


@router.get(API + "/experiments/get")
def get_experiment(experiment_id: str = Query(""), db: Session = Depends(get_db),
                   access: Access = require("mlflow.read")) -> Any:
    return _answer(lambda: {"experiment": store.experiment_json(
        _experiment(db, access, _need({"experiment_id": experiment_id}, "experiment_id"),
                    "viewer"))})


@router.get(API + "/experiments/get-by-name")
def get_experiment_by_name(experiment_name: str = Query(""), db: Session = Depends(get_db),
                           access: Access = require("mlflow.read")) -> Any:
    def go() -> Any:
        name = _need({"n": experiment_name}, "n") and experiment_name
        exp = store.experiment_by_name(db, name)
        if exp is None:
            raise missing("no experiment named %s" % name)
        return {"experiment": store.experiment_json(_experiment(db, access, exp.id, "viewer"))}
    return _answer(go)


@router.post(API + "/experiments/search")
def search_experiments(body: JsonBody = Body(None), db: Session = Depends(get_db),
                       access: Access = require("mlflow.read")) -> Any:
    project_ids = db.scalars(visible_projects(access.user).with_only_columns(Project.id)).all()
    return _answer(lambda: store.search_experiments(db, project_ids, body or {}))


def _experiment_change(db: Session, access: Access, request: Request, body: JsonBody,
                       change: str) -> Any:
    def go() -> Any:
        exp = _experiment(db, access, _need(body, "experiment_id"), "contributor")
        if change in ("delete", "restore"):
            exp.lifecycle_stage = "deleted" if change == "delete" else "active"
        elif change == "update":
            name = _need(body, "new_name")
            project = store.project_named(db, name) if isinstance(name, str) else None
            if project is None or project.id != exp.project_id:
                raise invalid("an experiment keeps its project: name it %s or %s/NAME"
                              % ((store.project_experiment_name(exp.project),) * 2))
            if store.experiment_by_name(db, name) not in (None, exp):
                raise MlflowError("RESOURCE_ALREADY_EXISTS", "an experiment named %s exists"
                                  % name)
            exp.name = name
        else:  # set-experiment-tag
            exp.tags = dict(exp.tags or {}, **store._tags([{"key": _need(body, "key"),
                                                            "value": body.get("value", "")}]))
        exp.updated_at = store.utcnow()
        audit.record(db, "mlflow.experiment." + change, access.user, target=exp.name,
                     request=request, experiment_id=exp.id)
        db.commit()
        return {}
    return _answer(go)


@router.post(API + "/experiments/delete")
def delete_experiment(request: Request, body: JsonBody = Body(None),
                      db: Session = Depends(get_db), access: Access = require("mlflow.write")
                      ) -> Any:
    return _experiment_change(db, access, request, body, "delete")


@router.post(API + "/experiments/restore")
def restore_experiment(request: Request, body: JsonBody = Body(None),
                       db: Session = Depends(get_db), access: Access = require("mlflow.write")
                       ) -> Any:
    return _experiment_change(db, access, request, body, "restore")


@router.post(API + "/experiments/update")
def update_experiment(request: Request, body: JsonBody = Body(None),
                      db: Session = Depends(get_db), access: Access = require("mlflow.write")
                      ) -> Any:
    return _experiment_change(db, access, request, body, "update")


@router.post(API + "/experiments/set-experiment-tag")
def set_experiment_tag(request: Request, body: JsonBody = Body(None),
                       db: Session = Depends(get_db), access: Access = require("mlflow.write")
                       ) -> Any:
    return _experiment_change(db, access, request, body, "set-tag")


# --- runs ---------------------------------------------------------------------------------

@router.post(API + "/runs/create")
def create_run(request: Request, body: JsonBody = Body(None), db: Session = Depends(get_db),
               access: Access = require("mlflow.write")) -> Any:
    def go() -> Any:
        exp = _experiment(db, access, _need(body, "experiment_id"), "contributor")
        r = store.create_run(db, exp, access.user, body or {})
        audit.record(db, "mlflow.run.create", access.user, target="%d/%s" % (
            exp.project_id, r.name), request=request, experiment_id=r.run_id)
        db.commit()
        return {"run": store.run_json(db, r)}
    return _answer(go)


@router.get(API + "/runs/get")
def get_run(run_id: str = Query(""), run_uuid: str = Query(""), db: Session = Depends(get_db),
            access: Access = require("mlflow.read")) -> Any:
    return _answer(lambda: {"run": store.run_json(db, _run(
        db, access, _need({"run_id": run_id or run_uuid}, "run_id"), "viewer"))})


def _run_write(db: Session, access: Access, body: JsonBody, change: Any) -> Any:
    def go() -> Any:
        body_ = body or {}
        r = _run(db, access, body_.get("run_id") or _need(body_, "run_uuid"), "contributor")
        out = change(r, body_)
        db.commit()
        return out if out is not None else {}
    return _answer(go)


@router.post(API + "/runs/update")
def update_run(body: JsonBody = Body(None), db: Session = Depends(get_db),
               access: Access = require("mlflow.write")) -> Any:
    def change(r: MlflowRun, b: Dict[str, Any]) -> Any:
        store.update_run(r, b)
        db.flush()
        return {"run_info": store.run_json(db, r)["info"]}
    return _run_write(db, access, body, change)


@router.post(API + "/runs/delete")
def delete_run(body: JsonBody = Body(None), db: Session = Depends(get_db),
               access: Access = require("mlflow.write")) -> Any:
    return _run_write(db, access, body, lambda r, b: setattr(r, "lifecycle_stage", "deleted"))


@router.post(API + "/runs/restore")
def restore_run(body: JsonBody = Body(None), db: Session = Depends(get_db),
                access: Access = require("mlflow.write")) -> Any:
    return _run_write(db, access, body, lambda r, b: setattr(r, "lifecycle_stage", "active"))


@router.post(API + "/runs/log-parameter")
def log_parameter(body: JsonBody = Body(None), db: Session = Depends(get_db),
                  access: Access = require("mlflow.write")) -> Any:
    return _run_write(db, access, body, lambda r, b: store.log_params(
        r, [{"key": _need(b, "key"), "value": b.get("value", "")}]))


@router.post(API + "/runs/log-metric")
def log_metric(body: JsonBody = Body(None), db: Session = Depends(get_db),
               access: Access = require("mlflow.write")) -> Any:
    return _run_write(db, access, body, lambda r, b: store.log_metrics(db, r, [
        {"key": _need(b, "key"), "value": _need(b, "value"), "timestamp": b.get("timestamp"),
         "step": b.get("step")}]))


@router.post(API + "/runs/set-tag")
def set_tag(body: JsonBody = Body(None), db: Session = Depends(get_db),
            access: Access = require("mlflow.write")) -> Any:
    return _run_write(db, access, body, lambda r, b: store.set_tags(
        r, [{"key": _need(b, "key"), "value": b.get("value", "")}]))


@router.post(API + "/runs/delete-tag")
def delete_tag(body: JsonBody = Body(None), db: Session = Depends(get_db),
               access: Access = require("mlflow.write")) -> Any:
    return _run_write(db, access, body, lambda r, b: store.delete_tag(r, _need(b, "key")))


@router.post(API + "/runs/log-batch")
def log_batch(body: JsonBody = Body(None), db: Session = Depends(get_db),
              access: Access = require("mlflow.write")) -> Any:
    def change(r: MlflowRun, b: Dict[str, Any]) -> None:
        parts = [b.get(k) or [] for k in ("metrics", "params", "tags")]
        if not all(isinstance(p, list) for p in parts):
            raise invalid("metrics, params and tags must be lists")
        if sum(len(p) for p in parts) > store.MAX_BATCH:
            raise invalid("a batch holds at most %d metrics, params and tags" % store.MAX_BATCH)
        store.log_params(r, parts[1])
        store.set_tags(r, parts[2])
        store.log_metrics(db, r, parts[0])
    return _run_write(db, access, body, change)


@router.get(API + "/metrics/get-history")
def metric_history(run_id: str = Query(""), run_uuid: str = Query(""),
                   metric_key: str = Query(""), db: Session = Depends(get_db),
                   access: Access = require("mlflow.read")) -> Any:
    def go() -> Any:
        r = _run(db, access, _need({"run_id": run_id or run_uuid}, "run_id"), "viewer")
        return {"metrics": store.metric_history(db, r, _need({"metric_key": metric_key},
                                                             "metric_key"))}
    return _answer(go)


@router.post(API + "/runs/search")
def search_runs(body: JsonBody = Body(None), db: Session = Depends(get_db),
                access: Access = require("mlflow.read")) -> Any:
    def go() -> Any:
        ids = (body or {}).get("experiment_ids") or []
        if not isinstance(ids, list):
            raise invalid("experiment_ids must be a list")
        return store.search_runs(db, [_experiment(db, access, i, "viewer") for i in ids],
                                 body or {})
    return _answer(go)


@router.post(API + "/logged-models/search")
def search_logged_models(body: JsonBody = Body(None), db: Session = Depends(get_db),
                         access: Access = require("mlflow.read")) -> Any:
    """MLflow 3's logged models are not kept here (a model is deployed from a project): the
    search answers none, so the client lists and downloads a run's own artifacts."""
    def go() -> Any:
        ids = (body or {}).get("experiment_ids") or []
        if not isinstance(ids, list):
            raise invalid("experiment_ids must be a list")
        for i in ids:
            _experiment(db, access, i, "viewer")
        return {"models": []}
    return _answer(go)


# --- artifacts (mlflow-artifacts:/EXPERIMENT/RUN/artifacts/PATH) --------------------------

def _artifact_place(db: Session, state: ServerState, access: Access, path: str, min_role: str
                    ) -> Tuple[MlflowRun, Path, str]:
    """The run, its artifacts folder and the path inside it that an artifact path names."""
    parts = [p for p in PurePosixPath(path or "").parts if p != "/"]
    if len(parts) < 3 or parts[2] != "artifacts" or any(p in ("..", ".") or "\x00" in p
                                                          or "\\" in p for p in parts):
        raise invalid("artifact path %r is not EXPERIMENT_ID/RUN_ID/artifacts[/PATH]" % path)
    r = _run(db, access, parts[1], min_role)
    if str(r.experiment_id) != parts[0]:
        raise missing("run %s not found in experiment %s" % (parts[1], parts[0]))
    return r, launch.artifacts_dir(state.settings, r.run_id), "/".join(parts[3:])


def _no_links(root: Path, rel: str) -> Path:
    """root/rel, refusing any symlink on the way (the artifacts folder is ours alone, but a
    tracked file copied there came from a user's project)."""
    path = root
    for part in PurePosixPath(rel).parts if rel else ():
        path = path / part
        if path.is_symlink():
            raise missing("artifact %s not found" % rel)
    return path


@router.get(ARTIFACTS)
def list_artifacts(path: str = Query(""), db: Session = Depends(get_db),
                   state: ServerState = Depends(get_state),
                   access: Access = require("mlflow.read")) -> Any:
    def go() -> Any:
        r, root, rel = _artifact_place(db, state, access, path, "viewer")
        folder = _no_links(root, rel)
        files: List[Dict[str, Any]] = []
        if folder.is_dir():
            for entry in sorted(folder.iterdir()):
                if entry.is_symlink() or entry.name.startswith(".") and \
                        entry.name.endswith(".partial"):
                    continue
                item: Dict[str, Any] = {"path": entry.name, "is_dir": entry.is_dir()}
                if not entry.is_dir():
                    item["file_size"] = entry.stat().st_size
                files.append(item)
        return {"files": files}
    return _answer(go)


@router.get(ARTIFACTS + "/{artifact_path:path}")
def download_artifact(artifact_path: str, db: Session = Depends(get_db),
                      state: ServerState = Depends(get_state),
                      access: Access = require("mlflow.read")) -> Any:
    def go() -> Any:
        r, root, rel = _artifact_place(db, state, access, artifact_path, "viewer")
        target = _no_links(root, rel)
        if not rel or not target.is_file():
            raise missing("artifact %s not found" % (rel or artifact_path))
        return FileResponse(str(target), media_type="application/octet-stream")
    return _answer(go)


@router.put(ARTIFACTS + "/{artifact_path:path}")
async def upload_artifact(artifact_path: str, request: Request, db: Session = Depends(get_db),
                          state: ServerState = Depends(get_state),
                          access: Access = require("mlflow.write")) -> Any:
    try:
        r, root, rel = await run_in_threadpool(_artifact_place, db, state, access,
                                               artifact_path, "contributor")
        if not rel:
            raise invalid("name the artifact: EXPERIMENT_ID/RUN_ID/artifacts/PATH")
        dest = _no_links(root, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name("." + dest.name + ".partial")
        size = 0
        with open(tmp, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_ARTIFACT_BYTES:
                    break
                out.write(chunk)
        if size > MAX_ARTIFACT_BYTES:
            tmp.unlink()
            raise invalid("artifact %s is larger than %d bytes" % (rel, MAX_ARTIFACT_BYTES))
        os.replace(tmp, dest)
        await run_in_threadpool(_tracked, db, r, rel, size)
        return {}
    except MlflowError as e:
        return error(e)


def _tracked(db: Session, r: MlflowRun, rel: str, size: int) -> None:
    """The artifact is one of the run's tracked files on the experiments page."""
    files = [f for f in (r.run.files or []) if f.get("path") != rel]
    r.run.files = files + [{"path": rel, "size": size}]
    db.commit()
