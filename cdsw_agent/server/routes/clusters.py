"""Clusters: the Hadoop clusters work runs next to (cdsw_agent/clusters holds the rules), who may
run work on each, and a project's home cluster."""

from __future__ import annotations

import datetime as dt
from typing import List, Optional

from fastapi import Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ... import clusters
from ...errors import UserError
from ...store.models import Cluster, ClusterGrant, Project, Team, User
from .. import audit
from ..deps import get_db
from ..errors import ApiError
from ..permissions import Access, api_router, check_cluster_grant, require
from ..schemas import Id, Strict

router = api_router(tags=["clusters"])
NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"


class ClusterCreate(Strict):
    name: str = Field(pattern=NAME)
    kind: str = Field(default="dev", pattern=r"^(dev|test|prod)$")
    description: str = Field(default="", max_length=2000)
    client_config_dir: str = Field(default="", max_length=1024)
    krb5_conf: str = Field(default="", max_length=1024)
    java_home: str = Field(default="", max_length=1024)
    requires_grant: bool = True


class GrantCreate(Strict):
    username: Optional[str] = Field(default=None, min_length=1, max_length=64)
    team: Optional[str] = Field(default=None, min_length=1, max_length=64)


class ProjectCluster(Strict):
    cluster: str = Field(pattern=NAME)


class GrantOut(BaseModel):
    id: int
    grantee: str  # "user NAME" or "team NAME"


class ClusterOut(BaseModel):
    id: int
    name: str
    kind: str
    description: str
    is_default: bool
    requires_grant: bool
    client_config_dir: str
    krb5_conf: str
    java_home: str
    node_label: str  # the swarm node label its gateway workers carry ("" for the default)
    projects: int
    grants: List[GrantOut]
    may_run: bool  # whether the caller may run work there
    created_at: dt.datetime


class ProjectClusterOut(BaseModel):
    project_id: int
    cluster: str
    kind: str
    may_run: bool


def cluster_out(db: Session, c: Cluster, user: User) -> ClusterOut:
    count = db.scalar(select(func.count(Project.id)).where(
        (Project.cluster_id == c.id) | (Project.cluster_id.is_(None) if c.is_default else False)))
    return ClusterOut(
        id=c.id, name=c.name, kind=c.kind, description=c.description, is_default=c.is_default,
        requires_grant=c.requires_grant, client_config_dir=c.client_config_dir,
        krb5_conf=c.krb5_conf, java_home=c.java_home,
        node_label="" if c.is_default else "%s=%s" % (clusters.NODE_LABEL, c.name),
        projects=count or 0,
        grants=[GrantOut(id=i, grantee=g) for i, g in clusters.grantees(db, c)],
        may_run=clusters.has_grant(db, user, c), created_at=c.created_at)


def _cluster(db: Session, cluster_id: int) -> Cluster:
    c = db.get(Cluster, cluster_id)
    if c is None:
        raise ApiError(404, "cluster not found")
    return c


@router.get("/clusters", response_model=List[ClusterOut])
def list_clusters(access: Access = require("signed_in"), db: Session = Depends(get_db)) -> list:
    clusters.default_cluster(db)
    return [cluster_out(db, c, access.user) for c in clusters.all_clusters(db)]


@router.post("/clusters", response_model=ClusterOut, status_code=201)
def add_cluster(body: ClusterCreate, request: Request, access: Access = require("site.admin"),
                db: Session = Depends(get_db)) -> ClusterOut:
    try:
        c = clusters.register(db, **body.model_dump())
    except UserError as e:
        raise ApiError(409 if "already exists" in str(e) else 422, str(e))
    audit.record(db, "cluster.add", access.user, target=c.name, request=request, kind=c.kind,
                 requires_grant=c.requires_grant)
    db.commit()
    return cluster_out(db, c, access.user)


@router.get("/clusters/{cluster_id}", response_model=ClusterOut)
def get_cluster(cluster_id: Id, access: Access = require("signed_in"),
                db: Session = Depends(get_db)) -> ClusterOut:
    return cluster_out(db, _cluster(db, cluster_id), access.user)


@router.delete("/clusters/{cluster_id}", status_code=204)
def delete_cluster(cluster_id: Id, request: Request, access: Access = require("site.admin"),
                   db: Session = Depends(get_db)) -> Response:
    c = _cluster(db, cluster_id)
    try:
        clusters.remove(db, c)
    except UserError as e:
        raise ApiError(409, str(e))
    audit.record(db, "cluster.remove", access.user, target=c.name, request=request)
    db.commit()
    return Response(status_code=204)


def _grantee(db: Session, body: GrantCreate) -> dict:
    if (body.username is None) == (body.team is None):
        raise ApiError(422, "name one grantee: username or team")
    if body.username is not None:
        user = db.scalars(select(User).where(User.username == body.username)).first()
        if user is None:
            raise ApiError(404, "no user named %s" % body.username)
        return {"user": user}
    team = db.scalars(select(Team).where(Team.name == body.team)).first()
    if team is None:
        raise ApiError(404, "no team named %s" % body.team)
    return {"team": team}


@router.post("/clusters/{cluster_id}/grants", response_model=ClusterOut, status_code=201)
def add_grant(cluster_id: Id, body: GrantCreate, request: Request,
              access: Access = require("site.admin"), db: Session = Depends(get_db)) -> ClusterOut:
    c = _cluster(db, cluster_id)
    who = _grantee(db, body)
    clusters.grant(db, c, **who)
    audit.record(db, "cluster.grant", access.user, target=c.name, request=request,
                 grantee=body.username and "user %s" % body.username or "team %s" % body.team)
    db.commit()
    return cluster_out(db, c, access.user)


@router.delete("/clusters/{cluster_id}/grants/{grant_id}", status_code=204)
def delete_grant(cluster_id: Id, grant_id: Id, request: Request,
                 access: Access = require("site.admin"), db: Session = Depends(get_db)) -> Response:
    c = _cluster(db, cluster_id)
    g = db.get(ClusterGrant, grant_id)
    if g is None or g.cluster_id != c.id:
        raise ApiError(404, "grant not found")
    db.delete(g)
    audit.record(db, "cluster.revoke", access.user, target=c.name, request=request,
                 grantee=g.grantee)
    db.commit()
    return Response(status_code=204)


@router.get("/projects/{project_id}/cluster", response_model=ProjectClusterOut)
def get_project_cluster(project_id: Id, access: Access = require("project.read"),
                        db: Session = Depends(get_db)) -> ProjectClusterOut:
    assert access.project is not None
    c = clusters.cluster_of(db, access.project)
    return ProjectClusterOut(project_id=access.project.id, cluster=c.name, kind=c.kind,
                             may_run=clusters.has_grant(db, access.user, c))


@router.put("/projects/{project_id}/cluster", response_model=ProjectClusterOut)
def set_project_cluster(project_id: Id, body: ProjectCluster, request: Request,
                        access: Access = require("project.admin"),
                        db: Session = Depends(get_db)) -> ProjectClusterOut:
    """Move the project's work to another cluster: its admins may, with a grant on it."""
    project = access.project
    assert project is not None
    try:
        c = clusters.by_name(db, body.cluster)
    except UserError as e:
        raise ApiError(404, str(e))
    previous = clusters.cluster_of(db, project)
    project.cluster_id = c.id
    check_cluster_grant(db, access.user, project)
    audit.record(db, "project.cluster", access.user, target=project.slug, request=request,
                 project_id=project.id, cluster=c.name, previous=previous.name)
    db.commit()
    return ProjectClusterOut(project_id=project.id, cluster=c.name, kind=c.kind, may_run=True)
