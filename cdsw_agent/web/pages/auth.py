"""Sign-in, the start page and the signed-in user's account (profile, password, API keys)."""

from __future__ import annotations

from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from ...security import ssh_keys
from ...server.deps import get_db, get_state
from ...server.permissions import Access, require
from ...server.routes.account import list_keys
from ...server.routes.site_settings import effective
from ...server.state import ServerState
from ..render import page
from .common import page_router, safe_next

router = page_router()


@router.get("/")
def home(access: Access = require("signed_in")) -> Response:
    return RedirectResponse("/projects", status_code=303)


@router.get("/signin")
def sign_in_page(request: Request, next: str = Query(default="/", max_length=2048),
                 access: Access = require("public"), db: Session = Depends(get_db),
                 state: ServerState = Depends(get_state)) -> Response:
    if access.caller.signed_in:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "signin.html", title="Sign in", next=safe_next(next),
                signup_enabled=bool(effective(db, state.settings, "signup_enabled")))


@router.get("/account")
def account_page(request: Request, access: Access = require("signed_in"),
                 db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> Response:
    keys = list_keys(access=access, db=db)
    ssh_key = ssh_keys.for_user(state.settings, access.user.id, access.user.username)
    return page(request, "account.html", title="Account", access=access, db=db, section="account",
                account=access.user, keys=keys, max_key_days=state.settings.api_key_max_days,
                ssh_key=ssh_key)
