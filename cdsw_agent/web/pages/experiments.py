"""Experiment pages: start a run, the runs with their metrics as columns, a comparison of
selected runs, and one run with its metrics, tracked files and live log."""

from __future__ import annotations

from typing import List

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from ...server.deps import get_db, get_state
from ...server.permissions import Access, require
from ...server.routes.admin import list_images, list_profiles
from ...server.routes.experiments import (ExperimentOut, compare_experiments, get_experiment,
                                          list_experiments)
from ...server.schemas import Id
from ...server.state import ServerState
from ...store.experiments_models import ACTIVE_STATUSES
from ..render import page
from .common import page_router, project_context
from .jobs import project_scripts

router = page_router()
LISTED = 200  # runs on the page; older ones stay in the API


def metric_names(runs: List[ExperimentOut]) -> List[str]:
    """Every metric any listed run tracked: the table's extra columns."""
    return sorted({name for r in runs for name in r.metrics})


@router.get("/projects/{project_id}/experiments")
def experiments_page(request: Request, project_id: Id, access: Access = require("project.read"),
                     db: Session = Depends(get_db),
                     state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "experiments")
    runs = list_experiments(project_id=project_id, status=None, limit=LISTED, offset=0,
                            access=access, db=db)
    return page(request, "experiments.html", title="Experiments · " + ctx["project"].name,
                access=access, db=db, runs=runs, metrics=metric_names(runs),
                active=any(r.status in ACTIVE_STATUSES for r in runs),
                scripts=project_scripts(state, access) if ctx["allowed"]["run"] else [],
                images=list_images(access=access, db=db),
                profiles=list_profiles(access=access, db=db), **ctx)


@router.get("/projects/{project_id}/experiments/compare")
def compare_page(request: Request, project_id: Id,
                 ids: str = Query(min_length=1, max_length=1000),
                 access: Access = require("project.read"), db: Session = Depends(get_db)) -> Response:
    ctx = project_context(request, access, db, "experiments")
    comparison = compare_experiments(project_id=project_id, ids=ids, access=access, db=db)
    return page(request, "experiments_compare.html", title="Compare runs · " + ctx["project"].name,
                access=access, db=db, comparison=comparison, **ctx)


@router.get("/projects/{project_id}/experiments/{experiment_id}")
def experiment_page(request: Request, project_id: Id, experiment_id: Id,
                    access: Access = require("project.read"), db: Session = Depends(get_db),
                    state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "experiments")
    run = get_experiment(project_id=project_id, experiment_id=experiment_id, access=access,
                         db=db, state=state)
    # the charts' series, [[step, value], ...]: MLflow runs logged their steps; a script's
    # cdsw.track_metric values are numbered in the order they were tracked
    steps = run.metric_steps if run.metric_steps is not None else {
        name: [[i, v] for i, v in enumerate(values)]
        for name, values in (run.metric_history or {}).items()}
    return page(request, "experiment.html", title="Run %d · %s" % (run.id, ctx["project"].name),
                access=access, db=db, run=run, chart_steps=steps, **ctx)
