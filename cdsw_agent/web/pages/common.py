"""What the project pages share: the project header, its tabs and what the caller may do."""

from __future__ import annotations

from typing import Any, Dict
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ... import clusters
from ...server.permissions import Access, api_router
from ...store.models import Cluster
from ...server.routes.projects import project_out
from ..render import can, project_nav


def page_router() -> APIRouter:
    """Pages are not part of the API's OpenAPI document."""
    return api_router(include_in_schema=False)


def project_context(request: Request, access: Access, db: Session, tab: str) -> Dict[str, Any]:
    assert access.project is not None
    allowed = {
        "write": can(request, access, db, "project.files.write"),
        "run": can(request, access, db, "project.run"),
        "admin": can(request, access, db, "project.admin"),
        "settings": can(request, access, db, "project.env.read"),
    }
    # where the project's work runs, shown on its every page once there is more than one cluster
    several = (db.scalar(select(func.count(Cluster.id))) or 0) > 1
    home = clusters.cluster_of(db, access.project) if several else None
    return dict(project=project_out(access.project, access.project_role), allowed=allowed,
                tabs=project_nav(access.project.id, allowed), tab=tab, section="projects",
                project_cluster=home)


def safe_next(target: str) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    parts = urlsplit(target or "/")
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return "/"
    return target
