"""Experiments: runs of a script with arguments on a snapshot of the project, with the metrics
and files the `cdsw` library tracked; comparing runs; downloading tracked files.

Operators start and stop runs, viewers read them (and download tracked files).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional

from fastapi import Depends, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...experiments import launch, mlflow_store, tracking
from ...experiments.runner import RunError
from ...jobs.launch import LaunchError, check_script_path, parse_arguments
from ...jobs.script import script_file
from ...store.experiments_models import RUN_STATUSES, ExperimentRun
from ...store.models import EngineImage, EngineProfile
from .. import audit
from ..deps import get_db, get_state
from ..errors import ApiError, unprocessable
from ..permissions import Access, api_router, require
from ..scheduler import experiments_for
from ..schemas import Id, Strict
from ..state import ServerState
from .projects import project_dir

router = api_router(tags=["experiments"])
BASE = "/projects/{project_id}/experiments"
MAX_COMPARE = 50
OptId = Optional[int]


class ExperimentCreate(Strict):
    script: str = Field(min_length=1, max_length=1024)
    arguments: str = Field(default="", max_length=4096)
    comment: str = Field(default="", max_length=1000)
    engine_image_id: OptId = Field(default=None, ge=1, le=2**53)
    profile_id: OptId = Field(default=None, ge=1, le=2**53)
    timeout_minutes: Optional[int] = Field(default=None, ge=0, le=43200)


class TrackedFile(BaseModel):
    path: str
    size: Optional[int] = None  # known once the run ended and the file was kept


class ExperimentOut(BaseModel):
    id: int
    project_id: int
    script: str
    arguments: str
    comment: str
    engine_image_id: OptId
    profile_id: OptId
    timeout_minutes: Optional[int]
    status: str
    exit_code: Optional[int]
    reason: str
    node: Optional[str]
    launched_by: Optional[str]
    created_at: dt.datetime
    started_at: Optional[dt.datetime]
    finished_at: Optional[dt.datetime]
    duration_seconds: Optional[float]
    metrics: Dict[str, Any]  # name -> last value (number or short string)
    files: List[TrackedFile]
    snapshot: Dict[str, Any]  # files, bytes, skipped (paths not copied: sockets, FIFOs, devices)
    metric_history: Optional[Dict[str, List[Any]]] = None  # in the single-run answer only
    tracker: str = "cdsw"  # cdsw: a script run; mlflow: opened by an MLflow client (/mlflow)
    # MLflow runs, single-run answer: each metric as [[step, value], ...] by step
    metric_steps: Optional[Dict[str, List[List[float]]]] = None


class CompareRun(BaseModel):
    id: int
    status: str
    script: str
    arguments: str
    comment: str


class CompareRow(BaseModel):
    metric: str
    values: List[Any]  # one per run, in the order of `runs`; null where a run lacks it


class CompareOut(BaseModel):
    runs: List[CompareRun]
    metrics: List[CompareRow]


def run_out(run: ExperimentRun, history: Optional[Dict[str, List[Any]]] = None,
            steps: Optional[Dict[str, List[List[float]]]] = None) -> ExperimentOut:
    duration = None
    if run.started_at and run.finished_at:
        duration = max(0.0, (run.finished_at - run.started_at).total_seconds())
    return ExperimentOut(
        id=run.id, project_id=run.project_id, script=run.script, arguments=run.arguments,
        comment=run.comment, engine_image_id=run.engine_image_id, profile_id=run.profile_id,
        timeout_minutes=run.timeout_minutes, status=run.status, exit_code=run.exit_code,
        reason=run.reason, node=run.node,
        launched_by=run.launched_by.username if run.launched_by else None,
        created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
        duration_seconds=duration, metrics=dict(run.metrics or {}),
        files=[TrackedFile(**f) for f in (run.files or [])], snapshot=dict(run.snapshot or {}),
        metric_history=history, tracker=run.tracker, metric_steps=steps)


def _run(db: Session, access: Access, run_id: int) -> ExperimentRun:
    run = db.get(ExperimentRun, run_id)
    if run is None or access.project is None or run.project_id != access.project.id:
        raise ApiError(404, "experiment run not found")
    return run


def _validate(db: Session, state: ServerState, project_id: int, body: ExperimentCreate) -> str:
    """The normalised script; one clear 422 for the first problem."""
    try:
        script = check_script_path(body.script)
        script_file(project_dir(state, project_id), script)
    except ValueError as e:
        raise unprocessable("script", str(e).replace("a job runs", "an experiment runs"))
    except LaunchError:
        raise unprocessable("script", "%s not found in the project; give a path relative to the "
                                      "project folder, such as analysis.py" % body.script)
    try:
        parse_arguments(body.arguments)
    except ValueError as e:
        raise unprocessable("arguments", str(e).split(": ", 1)[-1])
    for field, model, what in (("engine_image_id", EngineImage, "engine image"),
                               ("profile_id", EngineProfile, "engine profile")):
        value = getattr(body, field)
        if value is not None and db.get(model, value) is None:
            raise unprocessable(field, "no such %s" % what)
    return script


def _runner_error(e: RunError) -> ApiError:
    return ApiError(e.status, str(e))


def _audited(db: Session, access: Access, request: Request, action: str,
             run_id: int) -> ExperimentOut:
    """Audit what the runner just did (it writes in its own transactions), then answer with
    the run as it is now."""
    run = db.get(ExperimentRun, run_id)
    assert run is not None
    db.refresh(run)
    audit.record(db, action, access.user, target="%d/%s" % (run.project_id, run.script),
                 request=request, experiment_id=run_id)
    db.commit()
    db.refresh(run)
    return run_out(run)


@router.post(BASE, response_model=ExperimentOut, status_code=201)
def start_experiment(project_id: Id, body: ExperimentCreate, request: Request,
                     access: Access = require("project.run"), db: Session = Depends(get_db),
                     state: ServerState = Depends(get_state)) -> ExperimentOut:
    assert access.project is not None
    script = _validate(db, state, access.project.id, body)
    db.rollback()  # the runner writes in its own transactions
    run_id = experiments_for(state).start_run(
        access.project.id, script, body.arguments, body.comment, body.engine_image_id,
        body.profile_id, body.timeout_minutes, access.user.id)
    return _audited(db, access, request, "experiment.run", run_id)


@router.get(BASE, response_model=List[ExperimentOut])
def list_experiments(project_id: Id, status: Optional[str] = Query(default=None, max_length=16),
                     limit: int = Query(default=50, ge=1, le=1000),
                     offset: int = Query(default=0, ge=0, le=10**9),
                     access: Access = require("project.read"),
                     db: Session = Depends(get_db)) -> list:
    q = select(ExperimentRun).where(ExperimentRun.project_id == project_id)
    if status is not None:
        if status not in RUN_STATUSES:
            raise unprocessable("status", "%r is not a run status; use one of %s"
                                % (status, ", ".join(RUN_STATUSES)))
        q = q.where(ExperimentRun.status == status)
    runs = db.scalars(q.order_by(ExperimentRun.id.desc()).limit(limit).offset(offset)).all()
    return [run_out(r) for r in runs]


@router.get(BASE + "/compare", response_model=CompareOut)
def compare_experiments(project_id: Id, ids: str = Query(min_length=1, max_length=1000,
                                                         description="run ids, comma-separated"),
                        access: Access = require("project.read"),
                        db: Session = Depends(get_db)) -> CompareOut:
    try:
        wanted = list(dict.fromkeys(int(i) for i in ids.split(",") if i.strip()))
    except ValueError:
        raise unprocessable("ids", "give run ids separated by commas, such as 3,5")
    if not wanted or len(wanted) > MAX_COMPARE or any(i < 1 or i > 2**53 for i in wanted):
        raise unprocessable("ids", "give 1 to %d run ids separated by commas" % MAX_COMPARE)
    runs = [_run(db, access, i) for i in wanted]
    names = sorted({name for r in runs for name in (r.metrics or {})})
    return CompareOut(
        runs=[CompareRun(id=r.id, status=r.status, script=r.script, arguments=r.arguments,
                         comment=r.comment) for r in runs],
        metrics=[CompareRow(metric=n, values=[(r.metrics or {}).get(n) for r in runs])
                 for n in names])


@router.get(BASE + "/{experiment_id}", response_model=ExperimentOut)
def get_experiment(project_id: Id, experiment_id: Id, access: Access = require("project.read"),
                   db: Session = Depends(get_db),
                   state: ServerState = Depends(get_state)) -> ExperimentOut:
    run = _run(db, access, experiment_id)
    if run.tracker == "mlflow":  # every value with its step, as the MLflow client logged it
        steps = mlflow_store.histories(db, run.id)
        return run_out(run, {k: [v for _, v in pts] for k, pts in steps.items()}, steps)
    return run_out(run, experiments_for(state).history(run.id))


@router.get(BASE + "/{experiment_id}/log", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}},
                             "description": "the log from `offset` (bytes); the X-Log-Offset "
                                            "header is the offset to ask for next"}})
def get_experiment_log(project_id: Id, experiment_id: Id,
                       offset: int = Query(default=0, ge=0, le=2**53),
                       limit: int = Query(default=1 << 20, ge=1, le=16 << 20),
                       access: Access = require("project.read"), db: Session = Depends(get_db),
                       state: ServerState = Depends(get_state)) -> PlainTextResponse:
    run = _run(db, access, experiment_id)
    data = b""
    try:
        with open(launch.log_file(state.settings, run.id), "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        pass
    return PlainTextResponse(data.decode("utf-8", "replace"), headers={
        "X-Log-Offset": str(offset + len(data)), "X-Run-Status": run.status})


@router.post(BASE + "/{experiment_id}/stop", response_model=ExperimentOut)
def stop_experiment(project_id: Id, experiment_id: Id, request: Request,
                    access: Access = require("project.run"), db: Session = Depends(get_db),
                    state: ServerState = Depends(get_state)) -> ExperimentOut:
    _run(db, access, experiment_id)
    db.rollback()
    try:
        experiments_for(state).stop_run(experiment_id, who=access.user.username)
    except RunError as e:
        raise _runner_error(e)
    return _audited(db, access, request, "experiment.stop", experiment_id)


@router.get(BASE + "/{experiment_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "a file the run tracked, as kept when it ended"}})
def download_tracked_file(project_id: Id, experiment_id: Id,
                          file: str = Query(min_length=1, max_length=4096,
                                            description="the tracked file's project path"),
                          access: Access = require("project.files.read"),
                          db: Session = Depends(get_db),
                          state: ServerState = Depends(get_state)) -> FileResponse:
    run = _run(db, access, experiment_id)
    tracked = {f["path"] for f in (run.files or [])}
    if file not in tracked:
        raise ApiError(404, "run %d tracked no file %s" % (run.id, file))
    if not run.finalized:
        raise ApiError(409, "run %d is still %s; tracked files are kept when it ends"
                       % (run.id, run.status))
    path = tracking.artifact(launch.artifacts_dir(state.settings, run.id), file)
    if path is None:
        raise ApiError(404, "tracked file %s was not kept; the run's log says why" % file)
    return FileResponse(path, media_type="application/octet-stream",
                        filename=file.rsplit("/", 1)[-1])
