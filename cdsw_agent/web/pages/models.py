"""Model pages: the list, create and deploy, a model with its builds (log and progress), its
deployment, access keys and a test form that calls it, and the monitoring of its replicas."""

from __future__ import annotations

import json
from typing import Any, List, Optional

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from ...server.deps import get_db, get_state
from ...server.permissions import Access, require
from ...server.routes.admin import list_images, list_profiles
from ...server.routes.models import (BuildOut, ModelOut, get_model, list_access_keys, list_builds,
                                     list_models)
from ...server.schemas import Id
from ...server.state import ServerState
from ...store.models_models import BUILD_ACTIVE
from ..render import page
from .common import page_router, project_context
from .jobs import project_scripts

router = page_router()


def example_json(model: ModelOut) -> str:
    """The example input as the test form's editable JSON."""
    return json.dumps(model.example_input, indent=2) if model.example_input is not None else "{}"


def _latest_build(builds: List[BuildOut]) -> Optional[BuildOut]:
    return builds[0] if builds else None  # the API lists the newest first


@router.get("/projects/{project_id}/models")
def models_page(request: Request, project_id: Id, access: Access = require("project.read"),
                db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "models")
    models = list_models(project_id=project_id, access=access, db=db, state=state)
    return page(request, "models.html", title="Models · " + ctx["project"].name, access=access,
                db=db, models=models, **ctx)


@router.get("/projects/{project_id}/models/new")
def new_model_page(request: Request, project_id: Id,
                   access: Access = require("project.files.write"), db: Session = Depends(get_db),
                   state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "models")
    files = [s for s in project_scripts(state, access) if s.endswith(".py")]
    return page(request, "model_new.html", title="New model · " + ctx["project"].name,
                access=access, db=db, files=files, images=list_images(access=access, db=db),
                profiles=list_profiles(access=access, db=db),
                max_replicas=state.settings.model_max_replicas, **ctx)


def _model_context(request: Request, access: Access, db: Session, state: ServerState,
                   project_id: int, model_id: int) -> Any:
    ctx = project_context(request, access, db, "models")
    model = get_model(project_id=project_id, model_id=model_id, access=access, db=db, state=state)
    return ctx, model


@router.get("/projects/{project_id}/models/{model_id}")
def model_page(request: Request, project_id: Id, model_id: Id,
               access: Access = require("project.read"), db: Session = Depends(get_db),
               state: ServerState = Depends(get_state)) -> Response:
    ctx, model = _model_context(request, access, db, state, project_id, model_id)
    builds = list_builds(project_id=project_id, model_id=model_id, access=access, db=db)
    keys = list_access_keys(project_id=project_id, model_id=model_id, access=access, db=db)
    return page(request, "model.html", title="Model %s" % model.name, access=access, db=db,
                model=model, builds=builds, latest=_latest_build(builds), build_active=BUILD_ACTIVE,
                keys=keys, example=example_json(model), profiles=list_profiles(access=access, db=db),
                max_replicas=state.settings.model_max_replicas, subtab="overview", **ctx)


@router.get("/projects/{project_id}/models/{model_id}/monitoring")
def monitoring_page(request: Request, project_id: Id, model_id: Id,
                    access: Access = require("project.read"), db: Session = Depends(get_db),
                    state: ServerState = Depends(get_state)) -> Response:
    ctx, model = _model_context(request, access, db, state, project_id, model_id)
    replicas = model.deployment.replica_states if model.deployment else []
    totals = {k: sum(getattr(r, k) for r in replicas)
              for k in ("requests", "successes", "failures")}
    return page(request, "model_monitoring.html", title="Monitoring · model %s" % model.name,
                access=access, db=db, model=model, replicas=replicas, totals=totals,
                subtab="monitoring", **ctx)
