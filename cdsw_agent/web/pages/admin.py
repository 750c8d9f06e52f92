"""Site administration pages: users, engine images and profiles, clusters and their grants,
site settings and variables, the audit log, and the health of the master and the nodes."""

from __future__ import annotations

from typing import Optional

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...server.deps import get_db, get_state
from ...server.envvars import SITE, listing
from ...server.permissions import Access, require
from ...server import workbench_metrics
from ...server.routes.admin import audit_log, get_site_settings, list_images, list_profiles
from ...server.routes.cluster import nodes
from ...server.routes.clusters import list_clusters
from ...server.routes.site_settings import SITE_SETTINGS
from ...server.schemas import user_out
from ...server.state import ServerState
from ...store.models import User
from ..render import image_label, page, profile_label
from .common import page_router

router = page_router()
TABS = (("users", "Users", "/admin/users"), ("engines", "Engines", "/admin/engines"),
        ("clusters", "Clusters", "/admin/clusters"), ("settings", "Settings", "/admin/settings"),
        ("audit", "Audit log", "/admin/audit"), ("health", "Health", "/admin/health"))


def _admin_page(request: Request, access: Access, db: Session, template: str, tab: str,
                title: str, **context: object) -> Response:
    return page(request, template, title=title, access=access, db=db, section="admin",
                admin_tabs=TABS, admin_tab=tab, **context)


@router.get("/admin")
def admin_home(access: Access = require("site.admin")) -> Response:
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/admin/users")
def users_page(request: Request, access: Access = require("site.admin"),
               db: Session = Depends(get_db)) -> Response:
    users = [user_out(u) for u in db.scalars(select(User).order_by(User.username))]
    return _admin_page(request, access, db, "admin_users.html", "users", "Users", users=users)


@router.get("/admin/engines")
def engines_page(request: Request, access: Access = require("site.admin"),
                 db: Session = Depends(get_db)) -> Response:
    return _admin_page(request, access, db, "admin_engines.html", "engines", "Engines",
                       images=list_images(access=access, db=db),
                       profiles=list_profiles(access=access, db=db))


@router.get("/admin/clusters")
def clusters_page(request: Request, access: Access = require("site.admin"),
                  db: Session = Depends(get_db)) -> Response:
    return _admin_page(request, access, db, "admin_clusters.html", "clusters", "Clusters",
                       clusters=list_clusters(access=access, db=db))


@router.get("/admin/settings")
def settings_page(request: Request, access: Access = require("site.admin"),
                  db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> Response:
    values = get_site_settings(access=access, db=db, state=state)
    # settings that name an image or a profile are menus of what exists, not id fields
    choices = {"default_engine_image_id": [(i.id, image_label(i))
                                           for i in list_images(access=access, db=db)],
               "default_engine_profile_id": [(p.id, profile_label(p))
                                             for p in list_profiles(access=access, db=db)]}
    return _admin_page(request, access, db, "admin_settings.html", "settings", "Site settings",
                       values=values, definitions=SITE_SETTINGS, choices=choices,
                       env=listing(db, SITE))


@router.get("/admin/audit")
def audit_page(request: Request, action: str = Query(default="", max_length=64),
               actor: str = Query(default="", max_length=64),
               before_id: int = Query(default=0, ge=0, le=2**53),
               access: Access = require("site.admin"), db: Session = Depends(get_db)) -> Response:
    limit = 100
    events = audit_log(action=action, actor=actor, limit=limit, before_id=before_id,
                       access=access, db=db)
    older: Optional[int] = events[-1].id if len(events) == limit else None
    return _admin_page(request, access, db, "admin_audit.html", "audit", "Audit log",
                       events=events, action=action, actor=actor, older=older)


@router.get("/admin/health")
async def health_page(request: Request, access: Access = require("site.admin"),
                      db: Session = Depends(get_db),
                      state: ServerState = Depends(get_state)) -> Response:
    # the same (cached) master checks that /metrics exposes; they may block, so off the loop
    checks = await run_in_threadpool(workbench_metrics.master_health, state)
    workers = nodes(access=access, db=db)["nodes"]
    return _admin_page(request, access, db, "admin_health.html", "health", "Health",
                       checks=checks, nodes=workers)
