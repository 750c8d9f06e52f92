"""Promotions of a project's files, jobs and models to a project on another cluster: request,
review (approve or reject), history, rollback. The rules live in cdsw_agent/clusters/promotion.py
and, for who may do what, in server/permissions.py."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional, Tuple

from fastapi import Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ... import clusters
from ...clusters import promotion as promo
from ...models.service import service_for
from ...store.models import Project, User
from ...store.promotions_models import Promotion
from .. import audit
from ..deps import get_db, get_state
from ..errors import ApiError
from ..permissions import Access, api_router, project_access, require
from ..schemas import Id, Strict
from ..state import ServerState

router = api_router(tags=["promotions"])
BASE = "/projects/{project_id}/promotions"
ONE = BASE + "/{promotion_id}"


class PromotionCreate(Strict):
    target_project_id: int = Field(ge=1, le=2**62)
    note: str = Field(default="", max_length=2000)


class Review(Strict):
    note: str = Field(default="", max_length=2000)


class PromotionOut(BaseModel):
    id: int
    status: str
    source_project_id: int
    source_project: str
    source_cluster: str
    target_project_id: int
    target_project: str
    target_cluster: str
    note: str
    requested_by: Optional[str]
    requested_at: dt.datetime
    reviewed_by: Optional[str]
    reviewed_at: Optional[dt.datetime]
    review_note: str
    rolled_back_by: Optional[str]
    rolled_back_at: Optional[dt.datetime]
    files: int  # in the snapshot
    jobs: List[str]
    models: List[str]
    result: Dict[str, Any]


class PromotionDetail(PromotionOut):
    # what approving would change on the target now (pending), or changed (approved)
    diff: Dict[str, Any]


def _name(db: Session, user_id: Optional[int]) -> Optional[str]:
    u = db.get(User, user_id) if user_id else None
    return u.username if u else None


def promotion_out(db: Session, p: Promotion) -> Dict[str, Any]:
    source, target = db.get(Project, p.source_project_id), db.get(Project, p.target_project_id)
    assert source is not None and target is not None
    snap = p.snapshot or {}
    return dict(
        id=p.id, status=p.status, source_project_id=source.id, source_project=source.slug,
        source_cluster=clusters.cluster_of(db, source).name, target_project_id=target.id,
        target_project=target.slug, target_cluster=clusters.cluster_of(db, target).name,
        note=p.note, requested_by=_name(db, p.requested_by_id), requested_at=p.requested_at,
        reviewed_by=_name(db, p.reviewed_by_id), reviewed_at=p.reviewed_at,
        review_note=p.review_note, rolled_back_by=_name(db, p.rolled_back_by_id),
        rolled_back_at=p.rolled_back_at, files=len(snap.get("files", {})),
        jobs=[j["name"] for j in snap.get("jobs", [])],
        models=[m["name"] for m in snap.get("models", [])], result=p.result or {})


def detail(db: Session, state: ServerState, p: Promotion) -> PromotionDetail:
    if p.status == "pending":  # against the target as it is now
        target_now = dict(promo.definitions(db, p.target_project_id),
                          files=promo.file_digests(promo.project_dir(state.settings,
                                                                     p.target_project_id)))
    else:
        target_now = p.before or {}
    return PromotionDetail(diff=promo.diff(target_now, p.snapshot or {}),
                           **promotion_out(db, p))


def _failed(e: promo.PromotionError) -> ApiError:
    return ApiError(e.status, str(e))


def start_rebuilds(state: ServerState, rebuilds: List[Tuple[int, int]], actor_id: int) -> None:
    """After the commit: build each deployed model from the new files, then roll it (in the
    controller, which builds and keeps the thread that waits for the builds)."""
    if not rebuilds:
        return
    if state.controller is not None:
        state.controller.call("promotion.rebuild", rebuilds=rebuilds, actor_id=actor_id)
        return
    service = service_for(state)

    def redeploy(dep_id: int, build_id: int) -> None:
        with state.db.session() as s:
            moved = promo.roll_deployment(s, dep_id, build_id, actor_id)
        if moved:
            service.sync_deployment(dep_id)

    promo.redeploy_after_builds(rebuilds, service.builder.start,
                                lambda b: service.builder.wait(b), redeploy)


@router.get(BASE, response_model=List[PromotionOut])
def list_promotions(project_id: Id, access: Access = require("project.read"),
                    db: Session = Depends(get_db)) -> list:
    """The project's promotion history, as source or target, newest first."""
    rows = db.scalars(select(Promotion).where(or_(
        Promotion.source_project_id == project_id, Promotion.target_project_id == project_id))
        .order_by(Promotion.id.desc()))
    return [promotion_out(db, p) for p in rows]


@router.post(BASE, response_model=PromotionDetail, status_code=201)
def request_promotion(project_id: Id, body: PromotionCreate, request: Request,
                      access: Access = require("project.promote"),
                      db: Session = Depends(get_db),
                      state: ServerState = Depends(get_state)) -> PromotionDetail:
    assert access.project is not None
    target = db.get(Project, body.target_project_id)
    if target is None:
        raise ApiError(404, "target project not found")
    project_access(db, access.user, target, "viewer")  # 404 when the caller cannot see it
    try:
        p = promo.request(db, state.settings, access.project, target, access.user, body.note)
    except promo.PromotionError as e:
        raise _failed(e)
    audit.record(db, "promotion.request", access.user, target="%s -> %s" % (
        access.project.slug, target.slug), request=request, promotion_id=p.id,
        source_project_id=access.project.id, target_project_id=target.id,
        files=len(p.snapshot.get("files", {})))
    db.commit()
    return detail(db, state, p)


@router.get(ONE, response_model=PromotionDetail)
def get_promotion(project_id: Id, promotion_id: Id, access: Access = require("promotion.read"),
                  db: Session = Depends(get_db),
                  state: ServerState = Depends(get_state)) -> PromotionDetail:
    return detail(db, state, access.promotion)


@router.post(ONE + "/approve", response_model=PromotionDetail)
def approve(project_id: Id, promotion_id: Id, body: Review, request: Request,
            access: Access = require("promotion.review"), db: Session = Depends(get_db),
            state: ServerState = Depends(get_state)) -> PromotionDetail:
    p = access.promotion
    try:
        rebuilds = promo.approve(db, state.settings, p, access.user, body.note)
    except promo.PromotionError as e:
        raise _failed(e)
    audit.record(db, "promotion.approve", access.user, target=str(p.id), request=request,
                 promotion_id=p.id, target_project_id=p.target_project_id, **p.result)
    promo.commit_with_files(db, state.settings, p)
    start_rebuilds(state, rebuilds, access.user.id)
    return detail(db, state, p)


@router.post(ONE + "/reject", response_model=PromotionDetail)
def reject(project_id: Id, promotion_id: Id, body: Review, request: Request,
           access: Access = require("promotion.review"), db: Session = Depends(get_db),
           state: ServerState = Depends(get_state)) -> PromotionDetail:
    p = access.promotion
    try:
        promo.reject(p, access.user, body.note)
    except promo.PromotionError as e:
        raise _failed(e)
    audit.record(db, "promotion.reject", access.user, target=str(p.id), request=request,
                 promotion_id=p.id, target_project_id=p.target_project_id)
    db.commit()
    return detail(db, state, p)


@router.post(ONE + "/rollback", response_model=PromotionDetail)
def rollback(project_id: Id, promotion_id: Id, body: Review, request: Request,
             access: Access = require("promotion.rollback"), db: Session = Depends(get_db),
             state: ServerState = Depends(get_state)) -> PromotionDetail:
    p = access.promotion
    try:
        rebuilds = promo.rollback(db, state.settings, p, access.user)
    except promo.PromotionError as e:
        raise _failed(e)
    audit.record(db, "promotion.rollback", access.user, target=str(p.id), request=request,
                 promotion_id=p.id, target_project_id=p.target_project_id,
                 **p.result.get("rollback", {}))
    promo.commit_with_files(db, state.settings, p)
    start_rebuilds(state, rebuilds, access.user.id)
    return detail(db, state, p)
