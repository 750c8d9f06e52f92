"""Users: the directory every signed-in user can browse, and administration of accounts."""

from __future__ import annotations

from typing import List, Optional

from fastapi import Depends, Query, Request
from pydantic import Field
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from ... import accounts
from ...errors import UserError
from ...store.models import User, WebSession
from .. import audit
from ..deps import get_db, get_state
from ..errors import ApiError
from ..permissions import Access, api_router, require
from ..schemas import contains_pattern, Id, Strict, UserBrief, UserOut, user_out
from ..state import ServerState

router = api_router(prefix="/users", tags=["users"])


class UserCreate(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: Optional[str] = Field(default=None, min_length=1, max_length=1024)
    email: str = Field(default="", max_length=255)
    full_name: str = Field(default="", max_length=255)
    is_admin: bool = False
    auth_source: str = Field(default="local", pattern=r"^(local|ldap)$")


class UserUpdate(Strict):
    email: Optional[str] = Field(default=None, max_length=255)
    full_name: Optional[str] = Field(default=None, max_length=255)
    is_admin: Optional[bool] = None
    is_active: Optional[bool] = None
    unlock: Optional[bool] = None
    password: Optional[str] = Field(default=None, min_length=1, max_length=1024)


@router.get("", response_model=List[UserBrief])
def list_users(q: str = Query(default="", max_length=64), limit: int = Query(default=100, ge=1, le=1000),
               access: Access = require("signed_in"), db: Session = Depends(get_db)) -> list:
    stmt = select(User).where(User.is_active.is_(True)).order_by(User.username).limit(limit)
    if q:
        like = contains_pattern(q)
        stmt = stmt.where(or_(User.username.like(like, escape="\\"),
                              User.full_name.ilike(like, escape="\\")))
    return [UserBrief(id=u.id, username=u.username, full_name=u.full_name) for u in db.scalars(stmt)]


@router.get("/{user_id}", response_model=UserBrief)
def get_user(user_id: Id, access: Access = require("signed_in"), db: Session = Depends(get_db)) -> UserBrief:
    u = db.get(User, user_id)
    if u is None:
        raise ApiError(404, "user not found")
    return UserBrief(id=u.id, username=u.username, full_name=u.full_name)


@router.get("/{user_id}/details", response_model=UserOut)
def get_user_details(user_id: Id, access: Access = require("site.admin"),
                     db: Session = Depends(get_db)) -> UserOut:
    u = db.get(User, user_id)
    if u is None:
        raise ApiError(404, "user not found")
    return user_out(u)


@router.post("", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, request: Request, access: Access = require("site.admin"),
                db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> UserOut:
    if body.auth_source == "ldap" and body.password is not None:
        raise ApiError(422, "password: an LDAP account has no local password",
                       [{"field": "password", "message": "not allowed for LDAP accounts"}])
    try:
        user = accounts.create_user(db, state.passwords, state.settings, body.username,
                                    body.password, email=body.email, full_name=body.full_name,
                                    is_admin=body.is_admin, auth_source=body.auth_source)
    except UserError as e:
        status = 409 if "already taken" in str(e) else 422
        raise ApiError(status, str(e))
    audit.record(db, "user.create", access.user, target=user.username, request=request,
                 is_admin=body.is_admin)
    db.commit()
    return user_out(user)


@router.patch("/{user_id}", response_model=UserOut)
def update_user(user_id: Id, body: UserUpdate, request: Request,
                access: Access = require("site.admin"), db: Session = Depends(get_db),
                state: ServerState = Depends(get_state)) -> UserOut:
    user = db.get(User, user_id)
    if user is None:
        raise ApiError(404, "user not found")
    if user.id == access.user.id and (body.is_admin is False or body.is_active is False):
        raise ApiError(409, "you cannot remove your own administrator role or disable yourself")
    changes = body.model_dump(exclude_none=True, exclude={"password"})
    if body.email is not None:
        user.email = body.email
    if body.full_name is not None:
        user.full_name = body.full_name
    if body.is_admin is not None and body.is_admin != user.is_admin:
        user.is_admin = body.is_admin
        audit.record(db, "user.role", access.user, target=user.username, request=request,
                     is_admin=body.is_admin)
    if body.is_active is not None:
        user.is_active = body.is_active
        if not body.is_active:
            db.execute(delete(WebSession).where(WebSession.user_id == user.id))
    if body.unlock or body.password is not None:
        accounts.unlock(db, user)
    if body.password is not None:
        try:
            accounts.set_password(state.passwords, state.settings, user, body.password)
        except UserError as e:
            raise ApiError(422, str(e), [{"field": "password", "message": str(e)}])
        changes["password"] = "reset"
    audit.record(db, "user.update", access.user, target=user.username, request=request, **changes)
    db.commit()
    return user_out(user)
