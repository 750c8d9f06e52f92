"""Promotion pages: a project's promotions (request one, history as source or target) and one
promotion with its diff, review and rollback. Every change goes through the JSON API."""

from __future__ import annotations

from typing import List

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from ... import clusters
from ...server.deps import get_db, get_state
from ...server.permissions import Access, project_roles, require, visible_projects
from ...server.routes.promotions import detail, list_promotions
from ...server.schemas import Id
from ...server.state import ServerState
from ..render import can, page
from .common import page_router, project_context

router = page_router()


def _targets(db: Session, access: Access) -> List[dict]:
    """Projects on another cluster the caller can see: where this one may be promoted to."""
    assert access.project is not None
    home = clusters.cluster_of(db, access.project)
    out = []
    projects = list(db.scalars(visible_projects(access.user).limit(500)))
    roles = project_roles(db, access.user, projects)
    for p in projects:
        c = clusters.cluster_of(db, p)
        if c.id != home.id and roles.get(p.id):
            out.append({"id": p.id, "label": "%s (%s)" % (p.slug, c.name)})
    return sorted(out, key=lambda t: t["label"])


@router.get("/projects/{project_id}/promotions")
def promotions_page(request: Request, project_id: Id, access: Access = require("project.read"),
                    db: Session = Depends(get_db)) -> Response:
    ctx = project_context(request, access, db, "promotions")
    assert access.project is not None
    return page(request, "promotions.html", title="Promotions · " + access.project.name,
                access=access, db=db, cluster=clusters.cluster_of(db, access.project),
                promotions=list_promotions(project_id=project_id, access=access, db=db),
                may_request=can(request, access, db, "project.promote"),
                targets=_targets(db, access), **ctx)


@router.get("/projects/{project_id}/promotions/{promotion_id}")
def promotion_page(request: Request, project_id: Id, promotion_id: Id,
                   access: Access = require("promotion.read"), db: Session = Depends(get_db),
                   state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "promotions")
    p = detail(db, state, access.promotion)
    return page(request, "promotion.html", title="Promotion %d" % p.id, access=access, db=db,
                p=p, may_review=can(request, access, db, "promotion.review"),
                may_rollback=can(request, access, db, "promotion.rollback"), **ctx)
