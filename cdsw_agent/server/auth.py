"""Who is calling: a browser sign-in (cookie), an API key (Bearer) or nobody.

Cookie-authenticated requests that change state must carry the session's CSRF
token in the X-CSRF-Token header; API keys are exempt (browsers never send them
on their own).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

from fastapi import Depends, Request
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..security import tokens
from ..store.models import ApiKey, User, WebSession, utcnow
from .deps import get_db
from .errors import ApiError

SESSION_COOKIE = "cdsw_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass
class Caller:
    user: Optional[User]
    via: str  # "anonymous", "session", "api_key"
    scope: str = "write"  # API keys may be "read"
    web_session: Optional[WebSession] = None

    @property
    def signed_in(self) -> bool:
        return self.user is not None

    @property
    def is_admin(self) -> bool:
        return bool(self.user and self.user.is_admin)


ANONYMOUS = Caller(user=None, via="anonymous")


def _bearer(request: Request) -> Optional[str]:
    header = request.headers.get("authorization", "")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unsupported Authorization header; use 'Bearer <API key>'")
    return value.strip()


# built once: the credential by its digest, joined with its user (one query per request)
_API_KEY_AND_USER = select(ApiKey, User).join(User, User.id == ApiKey.user_id) \
    .where(ApiKey.key_hash == bindparam("digest"))
_WEB_SESSION_AND_USER = select(WebSession, User).join(User, User.id == WebSession.user_id) \
    .where(WebSession.token_hash == bindparam("digest"))


def current_caller(request: Request, db: Session = Depends(get_db)) -> Caller:
    """Looked up in the database on every request (one query: the credential joined with its
    user), never cached: a revoked or expired key, a signed-out session and a deactivated user
    are refused from the next request on, whichever worker process answers it."""
    now = utcnow()
    key = _bearer(request)
    if key is not None:
        found = db.execute(_API_KEY_AND_USER, {"digest": tokens.digest(key)}).first()
        if found is None:
            raise ApiError(401, "invalid, expired or revoked API key")
        row, user = found
        if row.revoked_at is not None or row.expires_at <= now or not user.is_active:
            raise ApiError(401, "invalid, expired or revoked API key")
        if row.last_used_at is None or now - row.last_used_at > dt.timedelta(minutes=1):
            row.last_used_at = now
            db.commit()
        return Caller(user=user, via="api_key", scope=row.scope)

    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        found = db.execute(_WEB_SESSION_AND_USER, {"digest": tokens.digest(cookie)}).first()
        ws, user = found if found is not None else (None, None)
        if ws is not None and ws.expires_at > now and user.is_active:
            if request.method not in SAFE_METHODS:
                sent = request.headers.get(CSRF_HEADER, "")
                if not sent or not tokens.same(sent, ws.csrf_token):
                    raise ApiError(403, "missing or wrong %s header; reload the page" % CSRF_HEADER)
            return Caller(user=user, via="session", web_session=ws)
    return ANONYMOUS
