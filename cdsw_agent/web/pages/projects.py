"""Project pages: the list (search and filters), new project, overview (files and README),
and project settings (collaborators, environment variables, engine)."""

from __future__ import annotations

from typing import List, Optional

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...projects import create as populate
from ...projects.storage import FileError
from ...server.deps import get_db, get_state
from ...server.envvars import listing, project_scope
from ...server.errors import ApiError
from ...server.permissions import Access, require
from ...server.routes.admin import list_images
from ...server.routes.clusters import get_project_cluster, list_clusters
from ...server.routes.files import files_of
from ...server.routes.projects import list_collaborators, project_rows
from ...server.schemas import Id
from ...server.state import ServerState
from ...store.models import Team, TeamMember
from ..markdown import render_markdown
from ..render import page
from .common import page_router, project_context

router = page_router()
README_NAMES = ("README.md", "readme.md", "Readme.md", "README.markdown", "README")


def _my_teams(db: Session, access: Access) -> List[Team]:
    stmt = select(Team).order_by(Team.name)
    if not access.user.is_admin:
        stmt = stmt.join(TeamMember).where(TeamMember.user_id == access.user.id)
    return list(db.scalars(stmt))


@router.get("/projects")
def projects_page(request: Request, q: str = Query(default="", max_length=100),
                  owner: str = Query(default="", max_length=64),
                  visibility: str = Query(default="", pattern=r"^(|private|team|public)$"),
                  access: Access = require("signed_in"), db: Session = Depends(get_db)) -> Response:
    projects = project_rows(access, db, q=q, owner=owner, visibility=visibility, limit=500)
    return page(request, "projects.html", title="Projects", access=access, db=db,
                section="projects", projects=projects, q=q, owner=owner, visibility=visibility,
                teams=_my_teams(db, access))


@router.get("/projects/new")
def new_project_page(request: Request, access: Access = require("signed_in"),
                     db: Session = Depends(get_db)) -> Response:
    return page(request, "project_new.html", title="New project", access=access, db=db,
                section="projects", templates=populate.templates(), teams=_my_teams(db, access),
                clusters=list_clusters(access=access, db=db))


def _readme(request: Request, access: Access, state: ServerState) -> Optional[str]:
    files = files_of(state, access)
    for name in README_NAMES:
        try:
            return render_markdown(files.read_text(name))
        except FileError:
            continue
    return None


@router.get("/projects/{project_id}")
def project_page(request: Request, project_id: Id, access: Access = require("project.read"),
                 db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "overview")
    try:
        entries = files_of(state, access).list("")
        readme = _readme(request, access, state)
        problem = ""
    except (ApiError, FileError) as e:  # missing folder on the master: show it, keep the page
        entries, readme, problem = [], None, str(e)
    return page(request, "project.html", title=ctx["project"].name, access=access, db=db,
                entries=entries, readme=readme, files_problem=problem, **ctx)


@router.get("/projects/{project_id}/settings")
def project_settings_page(request: Request, project_id: Id,
                          access: Access = require("project.env.read"),
                          db: Session = Depends(get_db)) -> Response:
    ctx = project_context(request, access, db, "settings")
    assert access.project is not None
    return page(request, "project_settings.html", title="Settings · " + ctx["project"].name,
                access=access, db=db, collaborators=list_collaborators(project_id=project_id, access=access),
                env=listing(db, project_scope(project_id)), images=list_images(access=access, db=db),
                teams=_my_teams(db, access), clusters=list_clusters(access=access, db=db),
                home_cluster=get_project_cluster(project_id=project_id, access=access, db=db),
                **ctx)
