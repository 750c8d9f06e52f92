"""The signed-in user's own account: profile, password and API keys."""

from __future__ import annotations

import datetime as dt
from typing import List, Optional

from fastapi import Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ... import accounts
from ...errors import UserError
from ...security import ssh_keys, tokens
from ...store.models import ApiKey, WebSession, utcnow
from .. import audit
from ..deps import get_db, get_state
from ..errors import ApiError
from ..permissions import Access, api_router, require
from ..schemas import Id, Strict, UserOut, user_out
from ..state import ServerState

router = api_router(prefix="/account", tags=["account"])


class ProfileUpdate(Strict):
    email: Optional[str] = Field(default=None, max_length=255)
    full_name: Optional[str] = Field(default=None, max_length=255)


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)
    revoke_api_keys: bool = Field(default=False, description="also revoke every API key of yours "
                                  "(scripts using them stop working); other browsers are always "
                                  "signed out")


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9 _.-]+$")
    scope: str = Field(default="write", pattern=r"^(read|write)$")
    expires_in_days: int = Field(default=90, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    scope: str
    created_at: dt.datetime
    expires_at: dt.datetime
    last_used_at: Optional[dt.datetime]
    revoked: bool


class ApiKeyCreated(ApiKeyOut):
    key: str  # shown once


class SshKeyOut(BaseModel):
    public_key: str = Field(description="add this line to your Git server (GitHub, GitLab, ...); "
                            "ssh:// clones of your projects authenticate with it")
    fingerprint: str
    created_at: dt.datetime


def _ssh_key_out(key: ssh_keys.UserKey) -> SshKeyOut:
    return SshKeyOut(public_key=key.public_key, fingerprint=key.fingerprint,
                     created_at=key.created_at)


def _key_out(k: ApiKey) -> dict:
    return dict(id=k.id, name=k.name, prefix=k.prefix, scope=k.scope, created_at=k.created_at,
                expires_at=k.expires_at, last_used_at=k.last_used_at,
                revoked=k.revoked_at is not None)


@router.get("", response_model=UserOut)
def get_account(access: Access = require("signed_in")) -> UserOut:
    return user_out(access.user)


@router.patch("", response_model=UserOut)
def update_account(body: ProfileUpdate, access: Access = require("signed_in"),
                   db: Session = Depends(get_db)) -> UserOut:
    user = db.merge(access.user)
    if body.email is not None:
        user.email = body.email
    if body.full_name is not None:
        user.full_name = body.full_name
    db.commit()
    return user_out(user)


@router.put("/password", status_code=204)
def change_password(body: PasswordChange, request: Request, access: Access = require("signed_in"),
                    db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> Response:
    user = db.merge(access.user)
    if user.auth_source != "local":
        raise ApiError(400, "you sign in through %s; change your password there"
                       % user.auth_source.upper())
    if not state.passwords.verify(user.password_hash, body.current_password):
        audit.record_now(state.db, "password.change.failure", actor=user, request=request)
        raise ApiError(403, "the current password is wrong")
    try:
        accounts.set_password(state.passwords, state.settings, user, body.new_password)
    except UserError as e:
        raise ApiError(422, str(e), [{"field": "new_password", "message": str(e)}])
    # sign out every other browser; API keys only when asked (scripts would stop)
    keep = access.caller.web_session.id if access.caller.web_session else -1
    db.execute(delete(WebSession).where(WebSession.user_id == user.id, WebSession.id != keep))
    revoked = 0
    if body.revoke_api_keys:
        revoked = db.execute(update(ApiKey).where(ApiKey.user_id == user.id,
                                                  ApiKey.revoked_at.is_(None))
                             .values(revoked_at=utcnow())).rowcount
    audit.record(db, "password.change", user, target=user.username, request=request,
                 api_keys_revoked=revoked)
    db.commit()
    return Response(status_code=204)


@router.get("/api-keys", response_model=List[ApiKeyOut])
def list_keys(access: Access = require("signed_in"), db: Session = Depends(get_db)) -> list:
    rows = db.scalars(select(ApiKey).where(ApiKey.user_id == access.user.id).order_by(ApiKey.id))
    return [_key_out(k) for k in rows]


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201)
def create_key(body: ApiKeyCreate, request: Request, access: Access = require("signed_in"),
               db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> dict:
    if body.expires_in_days > state.settings.api_key_max_days:
        raise ApiError(422, "expires_in_days: at most %d days are allowed here"
                       % state.settings.api_key_max_days,
                       [{"field": "expires_in_days", "message": "too long"}])
    if db.scalar(select(ApiKey).where(ApiKey.user_id == access.user.id, ApiKey.name == body.name)):
        raise ApiError(409, "you already have an API key named %r" % body.name)
    key = tokens.new_token(tokens.API_KEY_PREFIX)
    row = ApiKey(user_id=access.user.id, name=body.name, prefix=key[:12], key_hash=tokens.digest(key),
                 scope=body.scope, expires_at=utcnow() + dt.timedelta(days=body.expires_in_days))
    db.add(row)
    db.flush()
    audit.record(db, "apikey.create", access.user, target=body.name, request=request,
                 scope=body.scope, key_id=row.id)
    db.commit()
    return dict(_key_out(row), key=key)


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_key(key_id: Id, request: Request, access: Access = require("signed_in"),
               db: Session = Depends(get_db)) -> Response:
    row = db.get(ApiKey, key_id)
    if row is None or row.user_id != access.user.id:
        raise ApiError(404, "API key not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(db, "apikey.revoke", access.user, target=row.name, request=request,
                     key_id=row.id)
        db.commit()
    return Response(status_code=204)


@router.get("/ssh-key", response_model=SshKeyOut)
def get_ssh_key(access: Access = require("signed_in"),
                state: ServerState = Depends(get_state)) -> SshKeyOut:
    """Your SSH public key (made on first use), for `ssh://` and `git@host:path` clones."""
    return _ssh_key_out(ssh_keys.for_user(state.settings, access.user.id, access.user.username))


@router.post("/ssh-key/rotate", response_model=SshKeyOut)
def rotate_ssh_key(request: Request, access: Access = require("signed_in"),
                   db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> SshKeyOut:
    """A new SSH key pair replaces yours; the old public key stops working where you added it."""
    key = ssh_keys.rotate_for_user(state.settings, access.user.id, access.user.username)
    audit.record(db, "sshkey.rotate", access.user, target=access.user.username, request=request,
                 fingerprint=key.fingerprint)
    db.commit()
    return _ssh_key_out(key)


# Account > Hadoop Authentication (/account/kerberos) lives in its own module
from .kerberos import router as _kerberos_router  # noqa: E402

router.include_router(_kerberos_router)
