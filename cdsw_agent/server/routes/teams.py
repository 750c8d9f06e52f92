"""Teams: groups of users that own projects together, with members and team admins."""

from __future__ import annotations

import datetime as dt
from typing import List, Optional

from fastapi import Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ... import accounts
from ...store.models import Project, Team, TeamMember, User
from .. import audit
from ..deps import get_db
from ..errors import ApiError
from ..permissions import Access, api_router, require
from ..schemas import NAME_PATTERN, Id, Strict

router = api_router(prefix="/teams", tags=["teams"])


class TeamCreate(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=2000)


class TeamUpdate(Strict):
    description: Optional[str] = Field(default=None, max_length=2000)


class MemberSet(Strict):
    role: str = Field(default="member", pattern=r"^(member|admin)$")


class MemberOut(BaseModel):
    user_id: int
    username: str
    role: str


class TeamOut(BaseModel):
    id: int
    name: str
    description: str
    created_at: dt.datetime
    members: List[MemberOut]


def _team_out(team: Team) -> TeamOut:
    members = sorted(team.members, key=lambda m: m.user.username)
    return TeamOut(id=team.id, name=team.name, description=team.description,
                   created_at=team.created_at,
                   members=[MemberOut(user_id=m.user_id, username=m.user.username, role=m.role)
                            for m in members])


@router.get("", response_model=List[TeamOut])
def list_teams(access: Access = require("signed_in"), db: Session = Depends(get_db)) -> list:
    return [_team_out(t) for t in db.scalars(select(Team).order_by(Team.name))]


@router.post("", response_model=TeamOut, status_code=201)
def create_team(body: TeamCreate, request: Request, access: Access = require("signed_in"),
                db: Session = Depends(get_db)) -> TeamOut:
    if accounts.name_taken(db, body.name):
        raise ApiError(409, "the name %r is already taken by a user or team" % body.name)
    team = Team(name=body.name, description=body.description)
    team.members.append(TeamMember(user_id=access.user.id, role="admin"))
    db.add(team)
    db.flush()
    audit.record(db, "team.create", access.user, target=team.name, request=request)
    db.commit()
    return _team_out(team)


@router.get("/{team_id}", response_model=TeamOut)
def get_team(team_id: Id, access: Access = require("team.read")) -> TeamOut:
    assert access.team is not None
    return _team_out(access.team)


@router.patch("/{team_id}", response_model=TeamOut)
def update_team(team_id: Id, body: TeamUpdate, access: Access = require("team.admin"),
                db: Session = Depends(get_db)) -> TeamOut:
    team = access.team
    assert team is not None
    if body.description is not None:
        team.description = body.description
    db.commit()
    return _team_out(team)


@router.delete("/{team_id}", status_code=204)
def delete_team(team_id: Id, request: Request, access: Access = require("team.admin"),
                db: Session = Depends(get_db)) -> Response:
    team = access.team
    assert team is not None
    owned = db.scalar(select(func.count()).select_from(Project).where(Project.owner_team_id == team.id))
    if owned:
        raise ApiError(409, "team %s still owns %d project(s); transfer or delete them first"
                       % (team.name, owned))
    audit.record(db, "team.delete", access.user, target=team.name, request=request)
    db.delete(team)
    db.commit()
    return Response(status_code=204)


@router.put("/{team_id}/members/{user_id}", response_model=TeamOut)
def set_member(team_id: Id, user_id: Id, body: MemberSet, request: Request,
               access: Access = require("team.admin"), db: Session = Depends(get_db)) -> TeamOut:
    team = access.team
    assert team is not None
    user = db.get(User, user_id)
    if user is None or not user.is_active:
        raise ApiError(404, "user not found")
    member = db.get(TeamMember, (team.id, user.id))
    if member is None:
        team.members.append(TeamMember(user_id=user.id, role=body.role))
    else:
        if member.role == "admin" and body.role != "admin" and _admin_count(team) == 1:
            raise ApiError(409, "a team needs at least one administrator")
        member.role = body.role
    audit.record(db, "team.member.set", access.user, target="%s/%s" % (team.name, user.username),
                 request=request, role=body.role)
    db.commit()
    db.refresh(team)
    return _team_out(team)


@router.delete("/{team_id}/members/{user_id}", response_model=TeamOut)
def remove_member(team_id: Id, user_id: Id, request: Request, access: Access = require("team.admin"),
                  db: Session = Depends(get_db)) -> TeamOut:
    team = access.team
    assert team is not None
    member = db.get(TeamMember, (team.id, user_id))
    if member is None:
        raise ApiError(404, "not a member of this team")
    if member.role == "admin" and _admin_count(team) == 1:
        raise ApiError(409, "a team needs at least one administrator")
    audit.record(db, "team.member.remove", access.user,
                 target="%s/%s" % (team.name, member.user.username), request=request)
    team.members.remove(member)
    db.commit()
    db.refresh(team)
    return _team_out(team)


def _admin_count(team: Team) -> int:
    return sum(1 for m in team.members if m.role == "admin")
