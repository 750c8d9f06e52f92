"""Sign-in, sign-out, sign-up and who-am-I."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import delete
from sqlalchemy.orm import Session

from ... import accounts
from ...errors import UserError
from ...security import tokens
from ...security.signin_throttle import client_key
from ...store.models import WebSession, utcnow
from .. import audit
from ..auth import SESSION_COOKIE
from ..deps import get_db, get_state
from ..errors import ApiError
from ..permissions import Access, api_router, require
from ..schemas import Strict, UserOut, user_out
from ..state import ServerState
from .site_settings import effective

router = api_router(prefix="/auth", tags=["auth"])


class SignIn(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class SignUp(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    email: str = Field(default="", max_length=255)
    full_name: str = Field(default="", max_length=255)


class SignedIn(BaseModel):
    user: UserOut
    csrf_token: str
    expires_at: dt.datetime


class Me(BaseModel):
    user: Optional[UserOut]
    csrf_token: Optional[str] = None
    via: str


def _open_session(state: ServerState, db: Session, response: Response, user_id: int) -> WebSession:
    token = tokens.new_token()
    ws = WebSession(token_hash=tokens.digest(token), csrf_token=tokens.new_token(nbytes=24),
                    user_id=user_id,
                    expires_at=utcnow() + dt.timedelta(hours=state.settings.web_session_hours))
    db.add(ws)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=bool(state.settings.tls_enable), path="/",
                        max_age=state.settings.web_session_hours * 3600)
    return ws


SIGNIN_RESPONSES = {401: {"description": "invalid username or password"},
                    429: {"description": "too many failed sign-ins from this client; the "
                                         "Retry-After header says how many seconds to wait"}}


@router.post("/signin", response_model=SignedIn, responses=SIGNIN_RESPONSES)
def sign_in(body: SignIn, request: Request, response: Response,
            access: Access = require("public"), db: Session = Depends(get_db),
            state: ServerState = Depends(get_state)) -> SignedIn:
    address = client_key(request.client.host if request.client else None)
    try:
        result = accounts.authenticate(db, state.passwords, state.settings, body.username,
                                       body.password, address=address)
    except accounts.SlowDown as e:
        audit.record_now(state.db, "signin.throttled", actor_name=body.username[:64],
                         request=request, retry_after=e.retry_after)
        return JSONResponse({"error": str(e), "detail": {"retry_after": e.retry_after}},  # type: ignore[return-value]
                            status_code=429, headers={"Retry-After": str(e.retry_after)})
    except accounts.SignInError as e:
        audit.record_now(state.db, "signin.failure", actor_name=body.username[:64],
                         request=request, reason=str(e))
        raise ApiError(401, str(e))
    db.execute(delete(WebSession).where(WebSession.expires_at < utcnow()))
    ws = _open_session(state, db, response, result.user.id)
    audit.record(db, "signin", result.user, request=request, method=result.method)
    db.commit()
    return SignedIn(user=user_out(result.user), csrf_token=ws.csrf_token, expires_at=ws.expires_at)


@router.post("/signout", status_code=204)
def sign_out(request: Request, response: Response, access: Access = require("public"),
             db: Session = Depends(get_db)) -> Response:
    ws = access.caller.web_session
    if ws is not None:
        db.delete(db.merge(ws))
        audit.record(db, "signout", access.caller.user, request=request)
        db.commit()
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=Me)
def me(access: Access = require("public")) -> Me:
    caller = access.caller
    return Me(user=user_out(caller.user) if caller.user else None,
              csrf_token=caller.web_session.csrf_token if caller.web_session else None,
              via=caller.via)


@router.post("/signup", response_model=SignedIn, status_code=201)
def sign_up(body: SignUp, request: Request, response: Response,
            access: Access = require("public"), db: Session = Depends(get_db),
            state: ServerState = Depends(get_state)) -> SignedIn:
    if not effective(db, state.settings, "signup_enabled"):
        raise ApiError(403, "self sign-up is off; ask an administrator for an account")
    try:
        user = accounts.create_user(db, state.passwords, state.settings, body.username,
                                    body.password, email=body.email, full_name=body.full_name)
    except UserError as e:
        status = 409 if "already taken" in str(e) else 422
        raise ApiError(status, str(e))
    ws = _open_session(state, db, response, user.id)
    audit.record(db, "user.signup", user, target=user.username, request=request)
    db.commit()
    return SignedIn(user=user_out(user), csrf_token=ws.csrf_token, expires_at=ws.expires_at)
