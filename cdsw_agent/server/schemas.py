"""Request and response bodies shared by several routes. Unknown fields are refused."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

USERNAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class UserOut(BaseModel):
    id: int
    username: str
    email: str
    full_name: str
    is_admin: bool
    is_active: bool
    auth_source: str
    created_at: dt.datetime
    last_login_at: Optional[dt.datetime] = None
    locked: bool = False


class UserBrief(BaseModel):
    id: int
    username: str
    full_name: str


class Message(BaseModel):
    message: str


def user_out(user, now: Optional[dt.datetime] = None) -> UserOut:  # type: ignore[no-untyped-def]
    from ..store.models import utcnow

    now = now or utcnow()
    return UserOut(id=user.id, username=user.username, email=user.email, full_name=user.full_name,
                   is_admin=user.is_admin, is_active=user.is_active, auth_source=user.auth_source,
                   created_at=user.created_at, last_login_at=user.last_login_at,
                   locked=bool(user.locked_until and user.locked_until > now))


Password = Field(min_length=1, max_length=1024)


# Every numeric id in a path: bounded so no database sees an out-of-range integer.
from fastapi import Path as _Path  # noqa: E402
from typing import Annotated  # noqa: E402

Id = Annotated[int, _Path(ge=1, le=2**53)]


def contains_pattern(text: str) -> str:
    """A LIKE pattern (escape character backslash) matching text anywhere, wildcards escaped."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "%" + escaped + "%"
