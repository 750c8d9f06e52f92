"""Site administration: engine images and profiles, site environment, site settings, audit log."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Dict, List, Optional

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ...store.models import AuditEvent, EngineImage, EngineProfile, SiteSetting
from .. import audit, envvars
from ..envvars import EnvOut, EnvSet
from ..deps import get_db, get_state
from ..errors import ApiError
from ..permissions import Access, api_router, require
from ..schemas import Id, Strict
from ..state import ServerState
from . import site_settings

router = api_router(tags=["administration"])

IMAGE_REPO = r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
IMAGE_TAG = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
KERNELS = r"^(python3|ir|scala)$"
EDITORS = r"^(workbench|jupyterlab|terminal)$"


class ImageIn(Strict):
    repository: str = Field(min_length=1, max_length=255, pattern=IMAGE_REPO)
    tag: str = Field(min_length=1, max_length=128, pattern=IMAGE_TAG)
    description: str = Field(default="", max_length=2000)
    kernels: List[str] = Field(default_factory=lambda: ["python3"], max_length=10)
    editors: List[str] = Field(default_factory=lambda: ["workbench"], max_length=10)
    is_default: bool = False


class ImageUpdate(Strict):
    description: Optional[str] = Field(default=None, max_length=2000)
    kernels: Optional[List[str]] = Field(default=None, max_length=10)
    editors: Optional[List[str]] = Field(default=None, max_length=10)
    is_default: Optional[bool] = None


class ImageOut(BaseModel):
    id: int
    repository: str
    tag: str
    description: str
    kernels: List[str]
    editors: List[str]
    is_default: bool
    created_at: dt.datetime


class ProfileIn(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    cpu: float = Field(gt=0, le=256)
    memory_gb: float = Field(gt=0, le=4096)
    gpus: int = Field(default=0, ge=0, le=16)


class ProfileOut(BaseModel):
    id: int
    name: str
    cpu: float
    memory_gb: float
    gpus: int


class SettingsPatch(Strict):
    values: Dict[str, Any] = Field(max_length=50)


class AuditOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    detail: Dict[str, Any]
    ip: str


def _check_words(field: str, values: Optional[List[str]], pattern: str) -> None:
    for v in values or []:
        if not re.match(pattern, v):
            raise ApiError(422, "%s: unknown value %r" % (field, v[:40]),
                           [{"field": field, "message": "allowed: " + pattern.strip("^$()")}])


def _image_out(i: EngineImage) -> ImageOut:
    return ImageOut(id=i.id, repository=i.repository, tag=i.tag, description=i.description,
                    kernels=list(i.kernels or []), editors=list(i.editors or []),
                    is_default=i.is_default, created_at=i.created_at)


def _profile_out(p: EngineProfile) -> ProfileOut:
    return ProfileOut(id=p.id, name=p.name, cpu=p.cpu, memory_gb=p.memory_gb, gpus=p.gpus)


# --- engine images ---------------------------------------------------------------------------

@router.get("/engine-images", response_model=List[ImageOut])
def list_images(access: Access = require("signed_in"), db: Session = Depends(get_db)) -> list:
    return [_image_out(i) for i in db.scalars(select(EngineImage).order_by(EngineImage.id))]


@router.post("/engine-images", response_model=ImageOut, status_code=201)
def add_image(body: ImageIn, request: Request, access: Access = require("site.admin"),
              db: Session = Depends(get_db)) -> ImageOut:
    _check_words("kernels", body.kernels, KERNELS)
    _check_words("editors", body.editors, EDITORS)
    if db.scalar(select(EngineImage).where(EngineImage.repository == body.repository,
                                           EngineImage.tag == body.tag)):
        raise ApiError(409, "engine image %s:%s is already registered" % (body.repository, body.tag))
    if body.is_default:
        db.execute(update(EngineImage).values(is_default=False))
    image = EngineImage(**body.model_dump())
    db.add(image)
    db.flush()
    audit.record(db, "engine_image.add", access.user, target="%s:%s" % (body.repository, body.tag),
                 request=request)
    db.commit()
    return _image_out(image)


@router.patch("/engine-images/{image_id}", response_model=ImageOut)
def update_image(image_id: Id, body: ImageUpdate, request: Request,
                 access: Access = require("site.admin"), db: Session = Depends(get_db)) -> ImageOut:
    image = db.get(EngineImage, image_id)
    if image is None:
        raise ApiError(404, "engine image not found")
    _check_words("kernels", body.kernels, KERNELS)
    _check_words("editors", body.editors, EDITORS)
    if body.is_default:
        db.execute(update(EngineImage).values(is_default=False))
    for k, v in body.model_dump(exclude_none=True).items():
        setattr(image, k, v)
    audit.record(db, "engine_image.update", access.user, target="%s:%s" % (image.repository, image.tag),
                 request=request)
    db.commit()
    db.refresh(image)
    return _image_out(image)


@router.delete("/engine-images/{image_id}", status_code=204)
def delete_image(image_id: Id, request: Request, access: Access = require("site.admin"),
                 db: Session = Depends(get_db)) -> Response:
    image = db.get(EngineImage, image_id)
    if image is None:
        raise ApiError(404, "engine image not found")
    audit.record(db, "engine_image.delete", access.user, target="%s:%s" % (image.repository, image.tag),
                 request=request)
    db.delete(image)
    db.commit()
    return Response(status_code=204)


# --- engine profiles -------------------------------------------------------------------------

@router.get("/engine-profiles", response_model=List[ProfileOut])
def list_profiles(access: Access = require("signed_in"), db: Session = Depends(get_db)) -> list:
    rows = db.scalars(select(EngineProfile).order_by(EngineProfile.cpu, EngineProfile.memory_gb))
    return [_profile_out(p) for p in rows]


@router.post("/engine-profiles", response_model=ProfileOut, status_code=201)
def add_profile(body: ProfileIn, request: Request, access: Access = require("site.admin"),
                db: Session = Depends(get_db)) -> ProfileOut:
    if db.scalar(select(EngineProfile).where(EngineProfile.name == body.name)):
        raise ApiError(409, "a profile named %r exists" % body.name)
    profile = EngineProfile(**body.model_dump())
    db.add(profile)
    db.flush()
    audit.record(db, "engine_profile.add", access.user, target=body.name, request=request)
    db.commit()
    return _profile_out(profile)


@router.put("/engine-profiles/{profile_id}", response_model=ProfileOut)
def replace_profile(profile_id: Id, body: ProfileIn, request: Request,
                    access: Access = require("site.admin"), db: Session = Depends(get_db)) -> ProfileOut:
    profile = db.get(EngineProfile, profile_id)
    if profile is None:
        raise ApiError(404, "engine profile not found")
    other = db.scalar(select(EngineProfile).where(EngineProfile.name == body.name))
    if other is not None and other.id != profile.id:
        raise ApiError(409, "a profile named %r exists" % body.name)
    for k, v in body.model_dump().items():
        setattr(profile, k, v)
    audit.record(db, "engine_profile.update", access.user, target=body.name, request=request)
    db.commit()
    return _profile_out(profile)


@router.delete("/engine-profiles/{profile_id}", status_code=204)
def delete_profile(profile_id: Id, request: Request, access: Access = require("site.admin"),
                   db: Session = Depends(get_db)) -> Response:
    profile = db.get(EngineProfile, profile_id)
    if profile is None:
        raise ApiError(404, "engine profile not found")
    audit.record(db, "engine_profile.delete", access.user, target=profile.name, request=request)
    db.delete(profile)
    db.commit()
    return Response(status_code=204)


# --- site environment variables --------------------------------------------------------------

@router.get("/admin/env", response_model=List[EnvOut])
def list_site_env(access: Access = require("site.admin"), db: Session = Depends(get_db)) -> list:
    return envvars.listing(db, envvars.SITE)


@router.put("/admin/env/{name}", response_model=EnvOut)
def set_site_env(name: str, body: EnvSet, request: Request, access: Access = require("site.admin"),
                 db: Session = Depends(get_db)) -> EnvOut:
    row = envvars.upsert(db, envvars.SITE, name, body)
    audit.record(db, "site.env.set", access.user, target=name, request=request, secret=body.secret)
    db.commit()
    return envvars.out(row)


@router.delete("/admin/env/{name}", status_code=204)
def delete_site_env(name: str, request: Request, access: Access = require("site.admin"),
                    db: Session = Depends(get_db)) -> Response:
    envvars.remove(db, envvars.SITE, name)
    audit.record(db, "site.env.delete", access.user, target=name, request=request)
    db.commit()
    return Response(status_code=204)


# --- site settings ---------------------------------------------------------------------------

@router.get("/admin/settings", response_model=Dict[str, Any])
def get_site_settings(access: Access = require("site.admin"), db: Session = Depends(get_db),
                      state: ServerState = Depends(get_state)) -> dict:
    return site_settings.all_effective(db, state.settings)


@router.patch("/admin/settings", response_model=Dict[str, Any])
def patch_site_settings(body: SettingsPatch, request: Request, access: Access = require("site.admin"),
                        db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> dict:
    for key, value in body.values.items():
        problem = site_settings.validate(key, value)
        if problem:
            raise ApiError(422, "values.%s: %s" % (key[:64], problem),
                           [{"field": "values." + key[:64], "message": problem}])
    for key, value in body.values.items():
        row = db.get(SiteSetting, key)
        if row is None:
            db.add(SiteSetting(key=key, value=value))
        else:
            row.value = value
    audit.record(db, "site.settings", access.user, request=request, changed=sorted(body.values))
    db.commit()
    return site_settings.all_effective(db, state.settings)


# --- audit log -------------------------------------------------------------------------------

@router.get("/admin/audit", response_model=List[AuditOut])
def audit_log(action: str = Query(default="", max_length=64), actor: str = Query(default="", max_length=64),
              limit: int = Query(default=100, ge=1, le=1000), before_id: int = Query(default=0, ge=0, le=2**53),
              access: Access = require("site.admin"), db: Session = Depends(get_db)) -> list:
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if before_id:
        stmt = stmt.where(AuditEvent.id < before_id)
    return [AuditOut(id=e.id, at=e.at, actor=e.actor, action=e.action, target=e.target,
                     detail=e.detail or {}, ip=e.ip) for e in db.scalars(stmt)]
