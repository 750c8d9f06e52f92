"""Models: a project file and function, its builds, its deployment (replicas), access keys.

Viewers read (models, builds and logs, the deployment with each replica's state, counts and
log); contributors create, change, build, deploy, scale, redeploy, stop and manage access keys.
Replicas act as whoever last deployed or redeployed the model (deployed_by); builds act as
nobody (models/builds.py).
Callers of a deployed model use POST /model (model_endpoint.py) with an access key.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional

from fastapi import Depends, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...models import builds as model_builds
from ...models.keys import new_access_key
from ...models.service import ModelService, service_for
from ...store.models import EngineImage, EngineProfile, Project, utcnow
from ...store.models_models import (DEPLOYMENT_ACTIVE, REPLICA_LIVE, Model, ModelAccessKey,
                                    ModelBuild, ModelDeployment, ModelReplica)
from .. import audit
from ..deps import get_db, get_state
from ..errors import ApiError, unprocessable
from ..permissions import Access, api_router, require
from ..schemas import Id, Strict
from ..state import ServerState
from .projects import project_dir

router = api_router(tags=["models"])
BASE = "/projects/{project_id}/models"
ONE = BASE + "/{model_id}"
NAME = r"^[^\x00-\x1f\x7f]+$"
FUNCTION = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
OptId = Optional[int]
LOG_LINES = 200


class ModelCreate(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=NAME)
    file: str = Field(min_length=1, max_length=1024)
    function: str = Field(pattern=FUNCTION)
    description: str = Field(default="", max_length=10000)
    example_input: Optional[Any] = None
    engine_image_id: OptId = Field(default=None, ge=1, le=2**53)


class ModelUpdate(Strict):
    file: Optional[str] = Field(default=None, min_length=1, max_length=1024)
    function: Optional[str] = Field(default=None, pattern=FUNCTION)
    description: Optional[str] = Field(default=None, max_length=10000)
    example_input: Optional[Any] = None
    engine_image_id: OptId = Field(default=None, ge=1, le=2**53)


class DeployBody(Strict):
    build_id: OptId = Field(default=None, ge=1, le=2**53)  # default: the latest good build
    replicas: int = Field(default=1, ge=1, le=1000)
    profile_id: OptId = Field(default=None, ge=1, le=2**53)


class ScaleBody(Strict):
    replicas: int = Field(ge=1, le=1000)


class RedeployBody(Strict):
    build_id: OptId = Field(default=None, ge=1, le=2**53)


class AccessKeyCreate(Strict):
    revoke_others: bool = False  # true: rotate (the new key replaces every other)


class BuildOut(BaseModel):
    id: int
    model_id: int
    status: str
    reason: str
    file: str
    function: str
    artifact: str
    created_by: Optional[str]
    created_at: dt.datetime
    started_at: Optional[dt.datetime]
    finished_at: Optional[dt.datetime]


class ReplicaOut(BaseModel):
    id: int
    name: str
    build_id: int
    state: str
    message: str
    node: Optional[str]
    port: int
    run_as: Optional[str] = Field(default=None, description="whom the replica acts as")
    created_at: dt.datetime
    ready_at: Optional[dt.datetime]
    stopped_at: Optional[dt.datetime]
    requests: int = 0
    successes: int = 0
    failures: int = 0
    outstanding: int = 0
    latency_ms_mean: Optional[float] = None
    latency_ms_p50: Optional[float] = None
    latency_ms_p95: Optional[float] = None


class DeploymentOut(BaseModel):
    id: int
    model_id: int
    build_id: int
    replicas: int
    replicas_ready: int
    profile_id: OptId
    status: str
    reason: str
    created_by: Optional[str]
    deployed_by: Optional[str] = Field(default=None, description="whoever last deployed or "
                                       "redeployed it: its replicas act as this user")
    deployed_at: Optional[dt.datetime] = None
    created_at: dt.datetime
    updated_at: dt.datetime
    stopped_at: Optional[dt.datetime]
    replica_states: List[ReplicaOut] = Field(default_factory=list)


class ModelOut(BaseModel):
    id: int
    project_id: int
    name: str
    description: str
    file: str
    function: str
    example_input: Optional[Any]
    engine_image_id: OptId
    created_by: Optional[str]
    created_at: dt.datetime
    updated_at: dt.datetime
    endpoint: str
    deployment: Optional[DeploymentOut] = None


class AccessKeyOut(BaseModel):
    id: int
    prefix: str
    created_at: dt.datetime
    revoked_at: Optional[dt.datetime]


class AccessKeyCreated(AccessKeyOut):
    access_key: str  # shown this once only


class ModelCreated(ModelOut):
    access_key: str  # shown this once only


# --- helpers ---------------------------------------------------------------------------------

def _model(db: Session, access: Access, model_id: int) -> Model:
    model = db.get(Model, model_id)
    if model is None or access.project is None or model.project_id != access.project.id:
        raise ApiError(404, "model not found")
    return model


def _build(db: Session, model: Model, build_id: int) -> ModelBuild:
    build = db.get(ModelBuild, build_id)
    if build is None or build.model_id != model.id:
        raise ApiError(404, "build not found")
    return build


def _active(db: Session, model: Model) -> Optional[ModelDeployment]:
    return db.scalars(select(ModelDeployment).where(
        ModelDeployment.model_id == model.id, ModelDeployment.status.in_(DEPLOYMENT_ACTIVE))
        .order_by(ModelDeployment.id.desc())).first()


def _latest(db: Session, model: Model) -> Optional[ModelDeployment]:
    return db.scalars(select(ModelDeployment).where(ModelDeployment.model_id == model.id)
                      .order_by(ModelDeployment.id.desc())).first()


def build_out(b: ModelBuild) -> BuildOut:
    return BuildOut(id=b.id, model_id=b.model_id, status=b.status, reason=b.reason, file=b.file,
                    function=b.function, artifact=b.artifact,
                    created_by=b.created_by.username if b.created_by else None,
                    created_at=b.created_at, started_at=b.started_at, finished_at=b.finished_at)


def replica_out(r: ModelReplica, service: ModelService) -> ReplicaOut:
    return ReplicaOut(id=r.id, name=r.name, build_id=r.build_id, state=r.state,
                      message=r.message, node=r.node, port=r.port,
                      run_as=r.run_as.username if r.run_as else None, created_at=r.created_at,
                      ready_at=r.ready_at, stopped_at=r.stopped_at,
                      **service.router.summary(r.id))


def _replicas(db: Session, dep: ModelDeployment) -> List[ModelReplica]:
    """The live replicas, and the failed ones of the deployment's current build (their
    message says why); replaced and stopped ones are history."""
    return list(db.scalars(select(ModelReplica).where(
        ModelReplica.deployment_id == dep.id,
        ModelReplica.state.in_(REPLICA_LIVE)
        | ((ModelReplica.state == "failed") & (ModelReplica.build_id == dep.build_id)))
        .order_by(ModelReplica.id)))


def deployment_out(db: Session, dep: ModelDeployment, service: ModelService) -> DeploymentOut:
    replicas = _replicas(db, dep)
    return DeploymentOut(
        id=dep.id, model_id=dep.model_id, build_id=dep.build_id, replicas=dep.replicas,
        replicas_ready=sum(1 for r in replicas if r.state == "ready"),
        profile_id=dep.profile_id, status=dep.status, reason=dep.reason,
        created_by=dep.created_by.username if dep.created_by else None,
        deployed_by=dep.deployed_by.username if dep.deployed_by else None,
        deployed_at=dep.deployed_at,
        created_at=dep.created_at, updated_at=dep.updated_at, stopped_at=dep.stopped_at,
        replica_states=[replica_out(r, service) for r in replicas])


def model_out(db: Session, model: Model, service: ModelService, cls: Any = ModelOut,
              **extra: Any) -> Any:
    dep = _latest(db, model)
    return cls(id=model.id, project_id=model.project_id, name=model.name,
               description=model.description, file=model.file, function=model.function,
               example_input=model.example_input, engine_image_id=model.engine_image_id,
               created_by=model.created_by.username if model.created_by else None,
               created_at=model.created_at, updated_at=model.updated_at, endpoint="/model",
               deployment=deployment_out(db, dep, service) if dep else None, **extra)


def check_file(project: Path, file: str) -> str:
    """The model file normalised; ValueError saying what is wrong."""
    p = PurePosixPath(file)
    if p.is_absolute() or ".." in p.parts or "\\" in file or "\x00" in file:
        raise ValueError("give a path inside the project, relative to its folder, such as "
                         "predict.py")
    if p.suffix != ".py":
        raise ValueError("%s: a model is a function in a .py file" % file)
    real = (project / str(p)).resolve()
    if project.resolve() not in real.parents or not real.is_file():
        raise ValueError("%s not found in the project" % file)
    return str(p)


def _apply(db: Session, state: ServerState, project: Project, model: Model,
           values: Dict[str, Any]) -> None:
    if values.get("file") is not None:
        try:
            model.file = check_file(project_dir(state, project.id), values["file"])
        except ValueError as e:
            raise unprocessable("file", str(e))
    if values.get("function") is not None:
        model.function = values["function"]
    if values.get("description") is not None:
        model.description = values["description"]
    if "example_input" in values:
        model.example_input = values["example_input"]
    if "engine_image_id" in values:
        if values["engine_image_id"] is not None \
                and db.get(EngineImage, values["engine_image_id"]) is None:
            raise unprocessable("engine_image_id", "no such engine image")
        model.engine_image_id = values["engine_image_id"]


def _check_replicas(state: ServerState, n: int) -> None:
    most = state.settings.model_max_replicas
    if not 1 <= n <= most:
        raise unprocessable("replicas", "choose 1 to %d replicas (the site's "
                                        "model_max_replicas)" % most)


def _new_key(db: Session, model: Model, access: Access) -> tuple:
    key, prefix, digest = new_access_key()
    row = ModelAccessKey(model_id=model.id, prefix=prefix, key_hash=digest,
                         created_by_id=access.user.id, created_at=utcnow())
    db.add(row)
    db.flush()
    return key, row


def _target(model: Model) -> str:
    return "%d/%s" % (model.project_id, model.name)


def _after_change(db: Session, state: ServerState, dep_id: int) -> ModelService:
    """Commit, then let the supervisor act on the deployment at once (not at its next tick)."""
    db.commit()
    service = service_for(state)
    service.sync_deployment(dep_id)
    return service


# --- models ------------------------------------------------------------------------------------

@router.get(BASE, response_model=List[ModelOut])
def list_models(project_id: Id, access: Access = require("project.read"),
                db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> list:
    service = service_for(state)
    models = db.scalars(select(Model).where(Model.project_id == project_id).order_by(Model.id))
    return [model_out(db, m, service) for m in models]


@router.post(BASE, response_model=ModelCreated, status_code=201)
def create_model(project_id: Id, body: ModelCreate, request: Request,
                 access: Access = require("project.files.write"), db: Session = Depends(get_db),
                 state: ServerState = Depends(get_state)) -> Any:
    assert access.project is not None
    if db.scalar(select(Model.id).where(Model.project_id == project_id,
                                        Model.name == body.name)):
        raise ApiError(409, "this project already has a model called %r" % body.name)
    model = Model(project_id=project_id, name=body.name, description="", file="", function="",
                  created_by_id=access.user.id)
    _apply(db, state, access.project, model, body.model_dump())
    db.add(model)
    db.flush()
    key, _ = _new_key(db, model, access)
    audit.record(db, "model.create", access.user, target=_target(model), request=request,
                 model_id=model.id)
    db.commit()
    service_for(state).publish()
    return model_out(db, model, service_for(state), ModelCreated, access_key=key)


@router.get(ONE, response_model=ModelOut)
def get_model(project_id: Id, model_id: Id, access: Access = require("project.read"),
              db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> Any:
    """The model with its deployment's monitoring: each replica's state, message and counts
    (requests, successes, failures, latency since this master started)."""
    return model_out(db, _model(db, access, model_id), service_for(state))


@router.patch(ONE, response_model=ModelOut)
def update_model(project_id: Id, model_id: Id, body: ModelUpdate, request: Request,
                 access: Access = require("project.files.write"), db: Session = Depends(get_db),
                 state: ServerState = Depends(get_state)) -> Any:
    assert access.project is not None
    model = _model(db, access, model_id)
    values = {k: getattr(body, k) for k in body.model_fields_set}
    _apply(db, state, access.project, model, values)
    audit.record(db, "model.update", access.user, target=_target(model), request=request,
                 model_id=model.id, fields=sorted(values))
    db.commit()
    return model_out(db, model, service_for(state))


@router.delete(ONE, status_code=204)
def delete_model(project_id: Id, model_id: Id, request: Request,
                 access: Access = require("project.files.write"), db: Session = Depends(get_db),
                 state: ServerState = Depends(get_state)) -> Response:
    model = _model(db, access, model_id)
    service = service_for(state)
    db.rollback()
    service.stop_model(model_id)
    for b in db.scalars(select(ModelBuild).where(ModelBuild.model_id == model_id,
                                                 ModelBuild.status == "building")):
        service.builder.wait(b.id, timeout=30)  # its files must not reappear after deletion
    builds = list(db.scalars(select(ModelBuild).where(ModelBuild.model_id == model_id)))
    audit.record(db, "model.delete", access.user, target=_target(model), request=request,
                 model_id=model.id)
    db.delete(model)
    db.commit()
    service.publish()
    try:
        orchestrator = service.orchestrator
    except Exception:
        orchestrator = None
    model_builds.remove_artifacts(state.settings, orchestrator, builds)
    return Response(status_code=204)


# --- builds ------------------------------------------------------------------------------------

@router.post(ONE + "/builds", response_model=BuildOut, status_code=201)
def start_build(project_id: Id, model_id: Id, request: Request,
                access: Access = require("project.files.write"), db: Session = Depends(get_db),
                state: ServerState = Depends(get_state)) -> BuildOut:
    model = _model(db, access, model_id)
    try:
        check_file(project_dir(state, model.project_id), model.file)
    except ValueError as e:
        raise ApiError(409, "cannot build: %s; put the file back or change the model's file"
                       % e)
    build = ModelBuild(model_id=model.id, status="queued", reason="", file=model.file,
                       function=model.function, artifact="", created_by_id=access.user.id,
                       created_at=utcnow())
    db.add(build)
    db.flush()
    build.log_path = "models/builds/%d.log" % build.id
    audit.record(db, "model.build", access.user, target=_target(model), request=request,
                 model_id=model.id, build_id=build.id)
    db.commit()
    service_for(state).builder.start(build.id)
    return build_out(build)


@router.get(ONE + "/builds", response_model=List[BuildOut])
def list_builds(project_id: Id, model_id: Id, access: Access = require("project.read"),
                db: Session = Depends(get_db)) -> list:
    model = _model(db, access, model_id)
    return [build_out(b) for b in db.scalars(select(ModelBuild).where(
        ModelBuild.model_id == model.id).order_by(ModelBuild.id.desc()))]


@router.get(ONE + "/builds/{build_id}", response_model=BuildOut)
def get_build(project_id: Id, model_id: Id, build_id: Id,
              access: Access = require("project.read"), db: Session = Depends(get_db)) -> Any:
    return build_out(_build(db, _model(db, access, model_id), build_id))


@router.get(ONE + "/builds/{build_id}/log", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}},
                             "description": "the build log from `offset` (bytes); X-Log-Offset "
                                            "is the offset to ask for next"}})
def get_build_log(project_id: Id, model_id: Id, build_id: Id,
                  offset: int = Query(default=0, ge=0, le=2**53),
                  access: Access = require("project.read"), db: Session = Depends(get_db),
                  state: ServerState = Depends(get_state)) -> PlainTextResponse:
    build = _build(db, _model(db, access, model_id), build_id)
    data = b""
    try:
        with open(Path(state.settings.data_dir) / build.log_path, "rb") as f:
            f.seek(offset)
            data = f.read(16 << 20)
    except (FileNotFoundError, IsADirectoryError):
        pass
    return PlainTextResponse(data.decode("utf-8", "replace"), headers={
        "X-Log-Offset": str(offset + len(data)), "X-Build-Status": build.status})


# --- the deployment ----------------------------------------------------------------------------

def _good_build(db: Session, model: Model, build_id: Optional[int]) -> ModelBuild:
    if build_id is None:
        build = db.scalars(select(ModelBuild).where(
            ModelBuild.model_id == model.id, ModelBuild.status == "succeeded")
            .order_by(ModelBuild.id.desc())).first()
        if build is None:
            raise ApiError(409, "model %s has no successful build; build it first" % model.name)
        return build
    build = db.get(ModelBuild, build_id)
    if build is None or build.model_id != model.id:
        raise unprocessable("build_id", "no build %d of this model" % build_id)
    if build.status != "succeeded":
        raise ApiError(409, "build %d is %s; deploy a successful build" % (build.id,
                                                                           build.status))
    return build


@router.get(ONE + "/builds/{build_id}/bundle", response_class=FileResponse, responses={
    200: {"content": {"application/x-tar": {}},
          "description": "the build as a signed edge bundle (models/bundles.py)"}})
def export_bundle(project_id: Id, model_id: Id, build_id: Id, request: Request,
                  access: Access = require("project.files.write"),
                  db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> Any:
    """What `cdsw models export` writes, for the model page: contributors only, since the
    bundle carries the site's signature."""
    import shutil
    import tempfile

    from starlette.background import BackgroundTask

    from ...models import bundles

    model = _model(db, access, model_id)
    build = _build(db, model, build_id)
    client = getattr(service_for(state).orchestrator, "client", None)
    if client is None:
        raise ApiError(409, "the %s backend makes no images; edge bundles are made from "
                       "builds on the swarm backend" % state.settings.orchestrator)
    work = Path(state.settings.data_dir) / "models" / "bundles"
    work.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=str(work)))
    out = folder / ("model-%d-build-%d.cdsw-bundle" % (model.id, build.id))
    try:
        bundles.export(db, state.settings, client, str(model.id), build.id, out)
    except bundles.BundleError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise ApiError(409, str(e))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    audit.record(db, "model.export", access.user, target=_target(model), request=request,
                 model_id=model.id, build_id=build.id)
    db.commit()
    return FileResponse(str(out), filename=out.name, media_type="application/x-tar",
                        background=BackgroundTask(shutil.rmtree, str(folder), True))


@router.get(ONE + "/deployments", response_model=List[DeploymentOut])
def list_deployments(project_id: Id, model_id: Id, access: Access = require("project.read"),
                     db: Session = Depends(get_db),
                     state: ServerState = Depends(get_state)) -> list:
    model = _model(db, access, model_id)
    service = service_for(state)
    return [deployment_out(db, d, service) for d in db.scalars(select(ModelDeployment).where(
        ModelDeployment.model_id == model.id).order_by(ModelDeployment.id.desc()))]


@router.post(ONE + "/deployment", response_model=DeploymentOut, status_code=201)
def deploy(project_id: Id, model_id: Id, body: DeployBody, request: Request,
           access: Access = require("project.files.write"), db: Session = Depends(get_db),
           state: ServerState = Depends(get_state)) -> Any:
    model = _model(db, access, model_id)
    _check_replicas(state, body.replicas)
    if body.profile_id is not None and db.get(EngineProfile, body.profile_id) is None:
        raise unprocessable("profile_id", "no such engine profile")
    if _active(db, model) is not None:
        raise ApiError(409, "model %s is already deployed; redeploy, scale or stop it"
                       % model.name)
    build = _good_build(db, model, body.build_id)
    dep = ModelDeployment(model_id=model.id, build_id=build.id, replicas=body.replicas,
                          profile_id=body.profile_id, status="deploying",
                          reason="starting %d replicas" % body.replicas,
                          created_by_id=access.user.id, deployed_by_id=access.user.id,
                          deployed_at=utcnow())
    db.add(dep)
    db.flush()
    audit.record(db, "model.deploy", access.user, target=_target(model), request=request,
                 model_id=model.id, deployment_id=dep.id, build_id=build.id,
                 replicas=body.replicas, run_as=access.user.username)
    service = _after_change(db, state, dep.id)
    db.refresh(dep)
    return deployment_out(db, dep, service)


def _change(db: Session, state: ServerState, access: Access, request: Request, model_id: int,
            action: str, **values: Any) -> Any:
    model = _model(db, access, model_id)
    dep = _active(db, model)
    if dep is None:
        raise ApiError(409, "model %s is not deployed; deploy it first" % model.name)
    if "replicas" in values:
        dep.replicas = values["replicas"]
    if "build_id" in values:  # a redeploy: the replicas act as whoever redeployed
        dep.build_id = _good_build(db, model, values["build_id"]).id
        dep.status, dep.reason = "deploying", "replacing replicas with build %d" % dep.build_id
        dep.deployed_by_id, dep.deployed_at = access.user.id, utcnow()
        values["deployed_by_id"] = access.user.id
    if action == "model.stop":
        dep.status, dep.stopped_at, dep.reason = "stopped", utcnow(), "stopped by %s" \
            % access.user.username
    dep.updated_at = utcnow()
    audit.record(db, action, access.user, target=_target(model), request=request,
                 model_id=model.id, deployment_id=dep.id,
                 **{k: getattr(dep, k) for k in values})
    service = _after_change(db, state, dep.id)
    db.refresh(dep)
    return deployment_out(db, dep, service)


@router.post(ONE + "/deployment/scale", response_model=DeploymentOut)
def scale(project_id: Id, model_id: Id, body: ScaleBody, request: Request,
          access: Access = require("project.files.write"), db: Session = Depends(get_db),
          state: ServerState = Depends(get_state)) -> Any:
    _check_replicas(state, body.replicas)
    return _change(db, state, access, request, model_id, "model.scale", replicas=body.replicas)


@router.post(ONE + "/deployment/redeploy", response_model=DeploymentOut)
def redeploy(project_id: Id, model_id: Id, body: RedeployBody, request: Request,
             access: Access = require("project.files.write"), db: Session = Depends(get_db),
             state: ServerState = Depends(get_state)) -> Any:
    """Replaces the replicas one by one with a build (default: the latest successful one);
    callers are served throughout."""
    return _change(db, state, access, request, model_id, "model.redeploy",
                   build_id=body.build_id)


@router.post(ONE + "/deployment/stop", response_model=DeploymentOut)
def stop(project_id: Id, model_id: Id, request: Request,
         access: Access = require("project.files.write"), db: Session = Depends(get_db),
         state: ServerState = Depends(get_state)) -> Any:
    return _change(db, state, access, request, model_id, "model.stop")


# --- replicas ----------------------------------------------------------------------------------

def _replica(db: Session, model: Model, replica_id: int) -> ModelReplica:
    replica = db.get(ModelReplica, replica_id)
    if replica is None or replica.deployment.model_id != model.id:
        raise ApiError(404, "replica not found")
    return replica


@router.get(ONE + "/replicas", response_model=List[ReplicaOut])
def list_replicas(project_id: Id, model_id: Id, access: Access = require("project.read"),
                  db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> list:
    model = _model(db, access, model_id)
    dep = _latest(db, model)
    service = service_for(state)
    return [replica_out(r, service) for r in (_replicas(db, dep) if dep else [])]


@router.get(ONE + "/replicas/{replica_id}/log", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}},
                             "description": "the replica's latest output lines"}})
def get_replica_log(project_id: Id, model_id: Id, replica_id: Id,
                    lines: int = Query(default=LOG_LINES, ge=1, le=100000),
                    access: Access = require("project.read"), db: Session = Depends(get_db),
                    state: ServerState = Depends(get_state)) -> PlainTextResponse:
    replica = _replica(db, _model(db, access, model_id), replica_id)
    text = service_for(state).replica_log(replica.workload_id, lines)
    return PlainTextResponse("".join(line + "\n" for line in text),
                             headers={"X-Replica-State": replica.state})


# --- access keys -------------------------------------------------------------------------------

def key_out(k: ModelAccessKey) -> AccessKeyOut:
    return AccessKeyOut(id=k.id, prefix=k.prefix, created_at=k.created_at,
                        revoked_at=k.revoked_at)


@router.get(ONE + "/access-keys", response_model=List[AccessKeyOut])
def list_access_keys(project_id: Id, model_id: Id, access: Access = require("project.read"),
                     db: Session = Depends(get_db)) -> list:
    model = _model(db, access, model_id)
    return [key_out(k) for k in db.scalars(select(ModelAccessKey).where(
        ModelAccessKey.model_id == model.id).order_by(ModelAccessKey.id))]


@router.post(ONE + "/access-keys", response_model=AccessKeyCreated, status_code=201)
def create_access_key(project_id: Id, model_id: Id, body: AccessKeyCreate, request: Request,
                      access: Access = require("project.files.write"),
                      db: Session = Depends(get_db),
                      state: ServerState = Depends(get_state)) -> Any:
    model = _model(db, access, model_id)
    revoked = []
    if body.revoke_others:
        for k in db.scalars(select(ModelAccessKey).where(ModelAccessKey.model_id == model.id,
                                                         ModelAccessKey.revoked_at.is_(None))):
            k.revoked_at = utcnow()
            revoked.append(k.id)
    key, row = _new_key(db, model, access)
    audit.record(db, "model.access_key.create", access.user, target=_target(model),
                 request=request, model_id=model.id, key_id=row.id, prefix=row.prefix,
                 revoked=revoked)
    db.commit()
    service_for(state).publish()  # the new key works, the revoked ones stop, right now
    return AccessKeyCreated(access_key=key, **key_out(row).model_dump())


@router.delete(ONE + "/access-keys/{access_key_id}", status_code=204)
def revoke_access_key(project_id: Id, model_id: Id, access_key_id: Id, request: Request,
                      access: Access = require("project.files.write"),
                      db: Session = Depends(get_db),
                      state: ServerState = Depends(get_state)) -> Response:
    model = _model(db, access, model_id)
    key = db.get(ModelAccessKey, access_key_id)
    if key is None or key.model_id != model.id:
        raise ApiError(404, "access key not found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(db, "model.access_key.revoke", access.user, target=_target(model),
                     request=request, model_id=model.id, key_id=key.id, prefix=key.prefix)
        db.commit()
        service_for(state).publish()
    return Response(status_code=204)
