"""Team pages: every team, and one team with its members."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ...server.deps import get_db
from ...server.permissions import Access, require
from ...server.routes.teams import get_team, list_teams
from ...server.schemas import Id
from ...store.models import Project
from ..render import can, page
from .common import page_router

router = page_router()


@router.get("/teams")
def teams_page(request: Request, access: Access = require("signed_in"),
               db: Session = Depends(get_db)) -> Response:
    teams = list_teams(access=access, db=db)
    mine = {t.id for t in teams if any(m.user_id == access.user.id for m in t.members)}
    return page(request, "teams.html", title="Teams", access=access, db=db, section="teams",
                teams=teams, mine=mine)


@router.get("/teams/{team_id}")
def team_page(request: Request, team_id: Id, access: Access = require("team.read"),
              db: Session = Depends(get_db)) -> Response:
    team = get_team(team_id=team_id, access=access)
    projects = db.scalar(select(func.count()).select_from(Project)
                         .where(Project.owner_team_id == team_id))
    return page(request, "team.html", title="Team " + team.name, access=access, db=db,
                section="teams", team=team, project_count=projects,
                is_team_admin=can(request, access, db, "team.admin"))
