"""Job pages: the list, create and edit, a job with its run history, a run with its live log,
and the project's pipeline as a dependency graph."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from ...jobs.launch import SUFFIXES
from ...server.deps import get_db, get_state
from ...server.permissions import Access, require
from ...server.routes.admin import list_images, list_profiles
from ...server.routes.files import files_of
from ...server.routes.jobs import JobOut, PipelineOut, get_job, get_pipeline, get_run, list_jobs, list_runs
from ...server.schemas import Id
from ...server.state import ServerState
from ...store.jobs_models import NOTIFY_EVENTS
from ..render import CSP_INLINE_STYLES, page
from .common import page_router, project_context

router = page_router()
MAX_SCRIPTS = 500  # script picker suggestions; any path can still be typed


@lru_cache(maxsize=1)
def timezones() -> List[str]:
    return sorted(zoneinfo.available_timezones())


def project_scripts(state: ServerState, access: Access) -> List[str]:
    """Runnable scripts in the project (for the picker), breadth-first, bounded."""
    files = files_of(state, access)
    found: List[str] = []
    folders = [""]
    while folders and len(found) < MAX_SCRIPTS:
        folder = folders.pop(0)
        for e in files.list(folder):
            if e.type == "directory" and not e.name.startswith("."):
                folders.append(e.path)
            elif e.type == "file" and any(e.name.lower().endswith(s) for s in SUFFIXES):
                found.append(e.path)
    return sorted(found)[:MAX_SCRIPTS]


def _form(request: Request, access: Access, db: Session, state: ServerState, project_id: int,
          job: Optional[JobOut]) -> Response:
    ctx = project_context(request, access, db, "jobs")
    others = [j for j in list_jobs(project_id=project_id, access=access, db=db)
              if job is None or j.id != job.id]
    title = ("Edit job " + job.name) if job else "New job"
    return page(request, "job_form.html", title=title, access=access, db=db, job=job,
                other_jobs=others, scripts=project_scripts(state, access), timezones=timezones(),
                images=list_images(access=access, db=db), profiles=list_profiles(access=access, db=db),
                notify_events=NOTIFY_EVENTS, **ctx)


@router.get("/projects/{project_id}/jobs")
def jobs_page(request: Request, project_id: Id, access: Access = require("project.read"),
              db: Session = Depends(get_db)) -> Response:
    ctx = project_context(request, access, db, "jobs")
    jobs = list_jobs(project_id=project_id, access=access, db=db)
    names = {j.id: j.name for j in jobs}
    return page(request, "jobs.html", title="Jobs · " + ctx["project"].name, access=access, db=db,
                jobs=jobs, names=names, **ctx)


@router.get("/projects/{project_id}/jobs/new")
def new_job_page(request: Request, project_id: Id, access: Access = require("project.files.write"),
                 db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> Response:
    return _form(request, access, db, state, project_id, None)


@router.get("/projects/{project_id}/jobs/{job_id}/edit")
def edit_job_page(request: Request, project_id: Id, job_id: Id,
                  access: Access = require("project.files.write"), db: Session = Depends(get_db),
                  state: ServerState = Depends(get_state)) -> Response:
    job = get_job(project_id=project_id, job_id=job_id, access=access, db=db, state=state)
    return _form(request, access, db, state, project_id, job)


@router.get("/projects/{project_id}/jobs/{job_id}")
def job_page(request: Request, project_id: Id, job_id: Id, access: Access = require("project.read"),
             db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "jobs")
    job = get_job(project_id=project_id, job_id=job_id, access=access, db=db, state=state)
    runs = list_runs(project_id=project_id, job_id=job_id, limit=100, offset=0, access=access, db=db)
    jobs = list_jobs(project_id=project_id, access=access, db=db)
    names = {j.id: j.name for j in jobs}
    children = [j for j in jobs if j.parent_job_id == job.id]
    return page(request, "job.html", title="Job " + job.name, access=access, db=db, job=job,
                runs=runs, names=names, children=children, **ctx)


@router.get("/projects/{project_id}/jobs/{job_id}/runs/{run_id}")
def run_page(request: Request, project_id: Id, job_id: Id, run_id: Id,
             access: Access = require("project.read"), db: Session = Depends(get_db),
             state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "jobs")
    job = get_job(project_id=project_id, job_id=job_id, access=access, db=db, state=state)
    run = get_run(project_id=project_id, job_id=job_id, run_id=run_id, access=access, db=db)
    # the script's HTML outputs (pandas tables) carry inline styles in their sandboxed frames
    return page(request, "run.html", title="Run %d · %s" % (run.id, job.name), access=access,
                db=db, job=job, run=run, csp=CSP_INLINE_STYLES, **ctx)


# --- the pipeline graph ---------------------------------------------------------------------

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 200, 52, 70, 18, 12


@dataclass
class Box:
    id: int
    name: str
    status: str
    kind: str
    enabled: bool
    x: int
    y: int


def layout(graph: PipelineOut) -> Dict[str, object]:
    """Boxes placed left to right by dependency depth, each tree of the forest in its own rows,
    and edges as curves from a parent's right side to its child's left side."""
    parents = {e["to"]: e["from"] for e in graph.edges}
    kids: Dict[int, List[int]] = {}
    for child, parent in parents.items():
        kids.setdefault(parent, []).append(child)
    nodes = {n.id: n for n in graph.nodes}
    boxes: Dict[int, Box] = {}

    def place(job_id: int, depth: int, row: int) -> int:
        """Places a subtree with its root on `row` (its first child beside it); returns the
        first row below the subtree."""
        n = nodes[job_id]
        boxes[job_id] = Box(n.id, n.name, n.last_status or "never run", n.schedule_kind, n.enabled,
                            PAD + depth * (NODE_W + COL_GAP), PAD + row * (NODE_H + ROW_GAP))
        below = row + 1
        for i, child in enumerate(sorted(kids.get(job_id, []))):
            below = place(child, depth + 1, row if i == 0 else below)
        return below

    free = 0
    for job_id in sorted(nodes):
        if parents.get(job_id) not in nodes:  # a root (cycles cannot exist: the API refuses them)
            free = place(job_id, 0, free)
    edges = []
    for child, parent in parents.items():
        if parent in boxes and child in boxes:
            a, b = boxes[parent], boxes[child]
            x1, y1, x2, y2 = a.x + NODE_W, a.y + NODE_H // 2, b.x, b.y + NODE_H // 2
            mid = (x1 + x2) // 2
            edges.append("M%d %d C%d %d %d %d %d %d" % (x1, y1, mid, y1, mid, y2, x2, y2))
    width = max((b.x + NODE_W for b in boxes.values()), default=0) + PAD
    height = max((b.y + NODE_H for b in boxes.values()), default=0) + PAD
    return {"boxes": list(boxes.values()), "edges": edges, "width": width, "height": height,
            "node_w": NODE_W, "node_h": NODE_H}


@router.get("/projects/{project_id}/pipeline")
def pipeline_page(request: Request, project_id: Id, access: Access = require("project.read"),
                  db: Session = Depends(get_db)) -> Response:
    ctx = project_context(request, access, db, "pipeline")
    graph = get_pipeline(project_id=project_id, access=access, db=db)
    return page(request, "pipeline.html", title="Pipeline · " + ctx["project"].name, access=access,
                db=db, graph=layout(graph), **ctx)
