"""Jobs, their runs and logs, and the pipeline graph of a project.

Operators may start and stop runs, contributors create, change and delete jobs, viewers read.
A run acts as the person who started it; scheduled and dependent runs act as whoever last
changed what the job runs (jobs/identity.py), which every job shows as run_as / run_as_since.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from fastapi import Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ...jobs import graph, identity, schedule
from ...jobs.launch import LaunchError, check_script_path, parse_arguments
from ...jobs import script as script_copy
from ...jobs.runner import RunError, outputs_file
from ...store.jobs_models import ACTIVE_STATUSES, NOTIFY_EVENTS, Job, JobRun
from ...store.models import EngineImage, EngineProfile, Project
from ...workloads import outputs
from .. import audit
from ..deps import get_db, get_state
from ..errors import ApiError, unprocessable
from ..permissions import Access, api_router, require, role_rank
from ..scheduler import runner_for
from ..schemas import Id, Strict
from ..state import ServerState
from .projects import project_dir

router = api_router(tags=["jobs"])
BASE = "/projects/{project_id}/jobs"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
EMAIL = r"^[^@\s,<>]{1,64}@[^@\s,<>]{1,255}$"
Events = List[str]
OptId = Optional[int]


NAME = r"^[^\x00-\x1f\x7f]+$"  # free text on one line (it goes into mail subjects)


class JobCreate(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=NAME)
    script: str = Field(min_length=1, max_length=1024)
    arguments: str = Field(default="", max_length=4096)
    engine_image_id: OptId = Field(default=None, ge=1, le=2**53)
    profile_id: OptId = Field(default=None, ge=1, le=2**53)
    env: Dict[str, str] = Field(default_factory=dict, max_length=200)
    timeout_minutes: Optional[int] = Field(default=None, ge=0, le=43200)
    schedule: Optional[str] = Field(default=None, max_length=255)  # a cron line
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    parent_job_id: OptId = Field(default=None, ge=1, le=2**53)
    recipients: List[str] = Field(default_factory=list, max_length=50)
    notify_on: Events = Field(default_factory=lambda: ["failure", "timeout"], max_length=4)
    enabled: bool = True


class JobUpdate(Strict):
    name: Optional[str] = Field(default=None, min_length=1, max_length=100, pattern=NAME)
    script: Optional[str] = Field(default=None, min_length=1, max_length=1024)
    arguments: Optional[str] = Field(default=None, max_length=4096)
    engine_image_id: OptId = Field(default=None, ge=1, le=2**53)
    profile_id: OptId = Field(default=None, ge=1, le=2**53)
    env: Optional[Dict[str, str]] = Field(default=None, max_length=200)
    timeout_minutes: Optional[int] = Field(default=None, ge=0, le=43200)
    schedule: Optional[str] = Field(default=None, max_length=255)
    timezone: Optional[str] = Field(default=None, min_length=1, max_length=64)
    parent_job_id: OptId = Field(default=None, ge=1, le=2**53)
    recipients: Optional[List[str]] = Field(default=None, max_length=50)
    notify_on: Optional[Events] = Field(default=None, max_length=4)
    enabled: Optional[bool] = None


class RunBrief(BaseModel):
    id: int
    status: str
    finished_at: Optional[dt.datetime] = None


class JobOut(BaseModel):
    id: int
    project_id: int
    name: str
    script: str
    arguments: str
    engine_image_id: OptId
    profile_id: OptId
    env: Dict[str, str]
    timeout_minutes: Optional[int]
    schedule_kind: str
    schedule: Optional[str]
    timezone: str
    parent_job_id: OptId
    recipients: List[str]
    notify_on: List[str]
    enabled: bool
    created_by: Optional[str]
    run_as: Optional[str] = Field(description="whom scheduled and dependent runs act as: the "
                                              "person who last changed what the job runs")
    run_as_since: Optional[dt.datetime] = None
    script_changed: Optional[bool] = Field(
        default=None, description="the script differs from the version run_as saved: "
                                  "scheduled and dependent runs do not run it until the job is "
                                  "saved again (given by GET of one job)")
    created_at: dt.datetime
    updated_at: dt.datetime
    next_run_at: Optional[dt.datetime] = None
    last_run: Optional[RunBrief] = None


class RunOut(BaseModel):
    id: int
    job_id: int
    trigger: str
    status: str
    exit_code: Optional[int]
    reason: str
    node: Optional[str]
    triggered_by: Optional[str]
    run_as: Optional[str] = Field(description="whom the run acts as (HADOOP_USER_NAME)")
    parent_run_id: OptId
    created_at: dt.datetime
    started_at: Optional[dt.datetime]
    finished_at: Optional[dt.datetime]
    duration_seconds: Optional[float]


class PipelineNode(BaseModel):
    id: int
    name: str
    schedule_kind: str
    enabled: bool
    last_status: Optional[str]


class PipelineOut(BaseModel):
    nodes: List[PipelineNode]
    edges: List[Dict[str, int]]


# --- helpers ---------------------------------------------------------------------------------

def _job(db: Session, access: Access, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None or access.project is None or job.project_id != access.project.id:
        raise ApiError(404, "job not found")
    return job


def _run(db: Session, job: Job, run_id: int) -> JobRun:
    run = db.get(JobRun, run_id)
    if run is None or run.job_id != job.id:
        raise ApiError(404, "run not found")
    return run


def _last_runs(db: Session, job_ids: List[int]) -> Dict[int, JobRun]:
    if not job_ids:
        return {}
    latest = select(func.max(JobRun.id)).where(JobRun.job_id.in_(job_ids)) \
        .group_by(JobRun.job_id)
    return {r.job_id: r for r in db.scalars(select(JobRun).where(JobRun.id.in_(latest)))}


def job_out(job: Job, role: Optional[str], last: Optional[JobRun] = None) -> JobOut:
    show_env = role_rank(role) >= role_rank("contributor")
    next_run = None
    if job.schedule_kind == "cron" and job.enabled and job.last_scheduled_at is not None:
        next_run = schedule.next_fire(job.cron, job.timezone, job.last_scheduled_at)
    return JobOut(
        id=job.id, project_id=job.project_id, name=job.name, script=job.script,
        arguments=job.arguments, engine_image_id=job.engine_image_id, profile_id=job.profile_id,
        env={k: (v if show_env else "****") for k, v in (job.env or {}).items()},
        timeout_minutes=job.timeout_minutes, schedule_kind=job.schedule_kind,
        schedule=job.cron or None, timezone=job.timezone, parent_job_id=job.parent_job_id,
        recipients=list(job.recipients or []), notify_on=list(job.notify_on or []),
        enabled=job.enabled, created_by=job.created_by.username if job.created_by else None,
        run_as=job.run_as.username if job.run_as else None, run_as_since=job.run_as_since,
        created_at=job.created_at, updated_at=job.updated_at, next_run_at=next_run,
        last_run=RunBrief(id=last.id, status=last.status, finished_at=last.finished_at)
        if last else None)


def run_out(run: JobRun) -> RunOut:
    duration = None
    if run.started_at and run.finished_at:
        duration = max(0.0, (run.finished_at - run.started_at).total_seconds())
    return RunOut(id=run.id, job_id=run.job_id, trigger=run.trigger, status=run.status,
                  exit_code=run.exit_code, reason=run.reason, node=run.node,
                  triggered_by=run.triggered_by.username if run.triggered_by else None,
                  run_as=run.run_as.username if run.run_as else None,
                  parent_run_id=run.parent_run_id, created_at=run.created_at,
                  started_at=run.started_at, finished_at=run.finished_at,
                  duration_seconds=duration)


def _parents(db: Session, project_id: int) -> Dict[int, Optional[int]]:
    rows = db.execute(select(Job.id, Job.parent_job_id).where(Job.project_id == project_id))
    return {job_id: parent for job_id, parent in rows}


def _apply(db: Session, state: ServerState, project: Project, job: Job, values: Dict[str, Any],
           now: dt.datetime) -> None:
    """Validates the given fields and sets them on job; one clear error for the first problem."""
    if "name" in values and values["name"] != job.name:
        if db.scalar(select(Job.id).where(Job.project_id == project.id,
                                          Job.name == values["name"])):
            raise ApiError(409, "this project already has a job called %r" % values["name"])
        job.name = values["name"]
    if "script" in values:
        try:
            script = check_script_path(values["script"])
            script_copy.read(project_dir(state, project.id), script)
        except ValueError as e:
            raise unprocessable("script", str(e))
        except script_copy.ThroughLink as e:
            raise unprocessable("script", str(e))
        except LaunchError:
            raise unprocessable("script", "%s not found in the project; give a path relative to "
                                          "the project folder, such as analysis.py"
                                % values["script"])
        job.script = script
    if "arguments" in values:
        try:
            parse_arguments(values["arguments"] or "")
        except ValueError as e:
            raise unprocessable("arguments", str(e).split(": ", 1)[-1])
        job.arguments = values["arguments"] or ""
    for field, model in (("engine_image_id", EngineImage), ("profile_id", EngineProfile)):
        if field in values:
            if values[field] is not None and db.get(model, values[field]) is None:
                raise unprocessable(field, "no such %s" % ("engine image" if model is EngineImage
                                                           else "engine profile"))
            setattr(job, field, values[field])
    if values.get("env") is not None:
        bad = [k for k in values["env"] if not ENV_NAME.match(k)]
        if bad:
            raise unprocessable("env", "%r is not a variable name; use letters, digits and _"
                                % bad[0])
        job.env = dict(values["env"])
    if "timeout_minutes" in values:
        job.timeout_minutes = values["timeout_minutes"]
    if values.get("recipients") is not None:
        bad = [r for r in values["recipients"] if not re.match(EMAIL, r)]
        if bad:
            raise unprocessable("recipients", "%r is not a mail address" % bad[0])
        job.recipients = list(dict.fromkeys(values["recipients"]))
    if values.get("notify_on") is not None:
        bad = [e for e in values["notify_on"] if e not in NOTIFY_EVENTS]
        if bad:
            raise unprocessable("notify_on", "%r is not an event; use %s"
                                % (bad[0], ", ".join(NOTIFY_EVENTS)))
        job.notify_on = list(dict.fromkeys(values["notify_on"]))
    if values.get("enabled") is not None:
        if values["enabled"] and not job.enabled:
            job.last_scheduled_at = now  # resuming does not make up the paused time
        job.enabled = values["enabled"]
    _apply_schedule(db, project, job, values, now)
    # saving approves the script as it is now (jobs/identity.py)
    job.script_sha256 = script_copy.current_digest(project_dir(state, project.id), job.script)


def _apply_schedule(db: Session, project: Project, job: Job, values: Dict[str, Any],
                    now: dt.datetime) -> None:
    try:
        tz = values.get("timezone") or job.timezone or "UTC"
        schedule.parse_timezone(tz)
        cron = values["schedule"] if "schedule" in values else (job.cron or None)
        cron = schedule.validate_cron(cron) if cron and cron.strip() else None
    except schedule.ScheduleError as e:
        raise unprocessable(e.field, str(e))
    parent = values["parent_job_id"] if "parent_job_id" in values else job.parent_job_id
    if cron and parent is not None:
        raise unprocessable("schedule", "a job runs on a schedule or after a parent job, not "
                                        "both; leave out schedule or parent_job_id")
    if parent is not None and parent != job.parent_job_id:
        parent_job = db.get(Job, parent)
        if parent_job is None or parent_job.project_id != project.id:
            raise unprocessable("parent_job_id", "no job %d in this project" % parent)
        cycle = graph.find_cycle(_parents(db, project.id), job.id or 0, parent) \
            if job.id else None
        if cycle:
            names = {i: n for i, n in db.execute(select(Job.id, Job.name)
                                                  .where(Job.id.in_(cycle)))}
            text = " -> ".join(names.get(j, str(j)) for j in cycle)
            raise ApiError(409, "parent_job_id: this would make a dependency cycle: %s; choose a "
                                "parent that does not depend on this job" % text,
                           [{"field": "parent_job_id", "cycle": cycle}])
    if cron != (job.cron or None) or tz != job.timezone:
        job.last_scheduled_at = now if cron else None  # a new schedule counts from now
    job.cron, job.timezone, job.parent_job_id = cron or "", tz, parent
    job.schedule_kind = "cron" if cron else "dependent" if parent is not None else "manual"


def _runner_error(e: RunError) -> ApiError:
    return ApiError(e.status, str(e))


# --- jobs ----------------------------------------------------------------------------------

@router.get(BASE, response_model=List[JobOut])
def list_jobs(project_id: Id, access: Access = require("project.read"),
              db: Session = Depends(get_db)) -> list:
    jobs = db.scalars(select(Job).where(Job.project_id == project_id).order_by(Job.id)).all()
    last = _last_runs(db, [j.id for j in jobs])
    return [job_out(j, access.project_role, last.get(j.id)) for j in jobs]


@router.post(BASE, response_model=JobOut, status_code=201)
def create_job(project_id: Id, body: JobCreate, request: Request,
               access: Access = require("project.files.write"), db: Session = Depends(get_db),
               state: ServerState = Depends(get_state)) -> JobOut:
    assert access.project is not None
    job = Job(project_id=access.project.id, name="", script="", arguments="", env={},
              timezone="UTC", cron="", schedule_kind="manual", recipients=[], notify_on=[],
              enabled=True, created_by_id=access.user.id)
    values = body.model_dump()
    now = runner_for(state).clock()
    _apply(db, state, access.project, job, values, now)
    identity.changed_hands(job, access.user, None, now)
    db.add(job)
    db.flush()
    audit.record(db, "job.create", access.user, target="%d/%s" % (project_id, job.name),
                 request=request, job_id=job.id, run_as=access.user.username)
    db.commit()
    db.refresh(job)
    return job_out(job, access.project_role)


@router.get(BASE + "/{job_id}", response_model=JobOut)
def get_job(project_id: Id, job_id: Id, access: Access = require("project.read"),
            db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> JobOut:
    job = _job(db, access, job_id)
    out = job_out(job, access.project_role, _last_runs(db, [job.id]).get(job.id))
    if job.script_sha256 is not None:
        out.script_changed = job.script_sha256 != script_copy.current_digest(
            project_dir(state, job.project_id), job.script)
    return out


@router.patch(BASE + "/{job_id}", response_model=JobOut)
def update_job(project_id: Id, job_id: Id, body: JobUpdate, request: Request,
               access: Access = require("project.files.write"), db: Session = Depends(get_db),
               state: ServerState = Depends(get_state)) -> JobOut:
    assert access.project is not None
    job = _job(db, access, job_id)
    values = {k: getattr(body, k) for k in body.model_fields_set}
    for required in ("name", "script", "timezone", "enabled"):
        if required in values and values[required] is None:
            raise unprocessable(required, "may not be null")
    now = runner_for(state).clock()
    before, previous = identity.what_runs(job), job.run_as
    _apply(db, state, access.project, job, values, now)
    audit.record(db, "job.update", access.user, target="%d/%s" % (project_id, job.name),
                 request=request, job_id=job.id, fields=sorted(values))
    if identity.changed_hands(job, access.user, before, now):
        audit.record(db, "job.run_as", access.user, target="%d/%s" % (project_id, job.name),
                     request=request, job_id=job.id,
                     previous=previous.username if previous else None,
                     run_as=access.user.username)
    db.commit()
    db.refresh(job)
    return job_out(job, access.project_role, _last_runs(db, [job.id]).get(job.id))


@router.delete(BASE + "/{job_id}", status_code=204)
def delete_job(project_id: Id, job_id: Id, request: Request,
               access: Access = require("project.files.write"), db: Session = Depends(get_db),
               state: ServerState = Depends(get_state)) -> Response:
    job = _job(db, access, job_id)
    children = db.scalars(select(Job.name).where(Job.parent_job_id == job.id)).all()
    if children:
        raise ApiError(409, "job %s runs after this one; give %s another parent or delete it "
                            "first" % (children[0], children[0]))
    job.enabled = False  # no new scheduled run while the active ones stop
    db.commit()
    runner = runner_for(state)
    active = db.scalars(select(JobRun.id).where(JobRun.job_id == job.id,
                                                JobRun.status.in_(ACTIVE_STATUSES))).all()
    db.rollback()  # the runner writes in its own transactions
    for run_id in active:
        try:
            runner.stop_run(run_id, who=access.user.username)
        except RunError:
            pass  # ended meanwhile
    runs = db.scalars(select(JobRun).where(JobRun.job_id == job.id)).all()
    logs = [runner.log_file(r) for r in runs] + [outputs_file(state.settings.data_dir, r)
                                                  for r in runs]
    audit.record(db, "job.delete", access.user, target="%d/%s" % (project_id, job.name),
                 request=request, job_id=job.id)
    db.delete(job)
    db.commit()
    for path in logs:
        Path(path).unlink(missing_ok=True)
    return Response(status_code=204)


# --- runs ----------------------------------------------------------------------------------

def _audited_run(db: Session, access: Access, request: Request, action: str, job: Job,
                 run_id: int) -> RunOut:
    """Audit what the runner just did to a run (it writes in its own transactions), then
    answer with the run as it is now."""
    audit.record(db, action, access.user, target="%d/%s" % (job.project_id, job.name),
                 request=request, job_id=job.id, run_id=run_id)
    db.commit()
    run = db.get(JobRun, run_id)
    assert run is not None
    db.refresh(run)
    return run_out(run)


@router.post(BASE + "/{job_id}/runs", response_model=RunOut, status_code=201)
def start_run(project_id: Id, job_id: Id, request: Request, access: Access = require("project.run"),
              db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> RunOut:
    job = _job(db, access, job_id)
    db.rollback()  # the runner writes in its own transactions
    try:
        run_id = runner_for(state).start_run(job.id, "manual", user_id=access.user.id)
    except RunError as e:
        raise _runner_error(e)
    return _audited_run(db, access, request, "job.run", job, run_id)


@router.get(BASE + "/{job_id}/runs", response_model=List[RunOut])
def list_runs(project_id: Id, job_id: Id, limit: int = Query(default=50, ge=1, le=1000),
              offset: int = Query(default=0, ge=0, le=10**9),
              access: Access = require("project.read"), db: Session = Depends(get_db)) -> list:
    job = _job(db, access, job_id)
    runs = db.scalars(select(JobRun).where(JobRun.job_id == job.id)
                      .order_by(JobRun.id.desc()).limit(limit).offset(offset)).all()
    return [run_out(r) for r in runs]


@router.get(BASE + "/{job_id}/runs/{run_id}", response_model=RunOut)
def get_run(project_id: Id, job_id: Id, run_id: Id, access: Access = require("project.read"),
            db: Session = Depends(get_db)) -> RunOut:
    return run_out(_run(db, _job(db, access, job_id), run_id))


@router.get(BASE + "/{job_id}/runs/{run_id}/log", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}},
                             "description": "the log from `offset` (bytes); the X-Log-Offset "
                                            "header is the offset to ask for next"}})
def get_run_log(project_id: Id, job_id: Id, run_id: Id,
                offset: int = Query(default=0, ge=0, le=2**53),
                limit: int = Query(default=1 << 20, ge=1, le=16 << 20),
                access: Access = require("project.read"), db: Session = Depends(get_db),
                state: ServerState = Depends(get_state)) -> PlainTextResponse:
    run = _run(db, _job(db, access, job_id), run_id)
    data = b""
    try:
        with open(runner_for(state).log_file(run), "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        pass
    return PlainTextResponse(data.decode("utf-8", "replace"), headers={
        "X-Log-Offset": str(offset + len(data)), "X-Run-Status": run.status})


@router.get(BASE + "/{job_id}/runs/{run_id}/outputs", response_model=List[Dict[str, Any]])
def get_run_outputs(project_id: Id, job_id: Id, run_id: Id,
                    access: Access = require("project.read"), db: Session = Depends(get_db),
                    state: ServerState = Depends(get_state)) -> List[Dict[str, Any]]:
    """The rich outputs of a run's script (tables as HTML, images, plotly figures), in order,
    as {"type": "display_data", "data": {MIME type: value}}; the log has their text."""
    run = _run(db, _job(db, access, job_id), run_id)
    return outputs.read(outputs_file(state.settings.data_dir, run))


@router.post(BASE + "/{job_id}/runs/{run_id}/stop", response_model=RunOut)
def stop_run(project_id: Id, job_id: Id, run_id: Id, request: Request,
             access: Access = require("project.run"), db: Session = Depends(get_db),
             state: ServerState = Depends(get_state)) -> RunOut:
    job = _job(db, access, job_id)
    _run(db, job, run_id)
    db.rollback()
    try:
        runner_for(state).stop_run(run_id, who=access.user.username)
    except RunError as e:
        raise _runner_error(e)
    return _audited_run(db, access, request, "job.stop", job, run_id)


# --- pipeline ------------------------------------------------------------------------------

@router.get("/projects/{project_id}/pipeline", response_model=PipelineOut)
def get_pipeline(project_id: Id, access: Access = require("project.read"),
                 db: Session = Depends(get_db)) -> PipelineOut:
    jobs = db.scalars(select(Job).where(Job.project_id == project_id).order_by(Job.id)).all()
    last = _last_runs(db, [j.id for j in jobs])
    described = {j.id: {"name": j.name, "schedule_kind": j.schedule_kind, "enabled": j.enabled,
                        "last_status": last[j.id].status if j.id in last else None}
                 for j in jobs}
    g = graph.pipeline(described, {j.id: j.parent_job_id for j in jobs})
    return PipelineOut(nodes=[PipelineNode(**n) for n in g["nodes"]], edges=g["edges"])
