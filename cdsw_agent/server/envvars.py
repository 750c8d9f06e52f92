"""Engine environment variables through the API: the naming rule, storage and masking.

The project and site routes use it; where the variables live is store/envvars.py.
"""

from __future__ import annotations

import re
from typing import List, Optional

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.envvars import SITE, project_scope  # noqa: F401  (re-exported for the routes)
from ..store.models import EnvVar
from .errors import ApiError
from .schemas import Strict

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class EnvSet(Strict):
    value: str = Field(max_length=65536)
    secret: bool = False


class EnvOut(BaseModel):
    name: str
    value: str
    secret: bool


def out(v: EnvVar) -> EnvOut:
    """Secret values never leave the server through the API."""
    return EnvOut(name=v.name, value="****" if v.secret else v.value, secret=v.secret)


def listing(db: Session, scope: str) -> List[EnvOut]:
    return [out(v) for v in db.scalars(select(EnvVar).where(EnvVar.scope == scope).order_by(EnvVar.name))]


def upsert(db: Session, scope: str, name: str, body: EnvSet, project_id: Optional[int] = None) -> EnvVar:
    if not NAME.match(name):
        raise ApiError(422, "name: use letters, digits and '_', not starting with a digit",
                       [{"field": "name", "message": "not a valid variable name"}])
    row = db.scalar(select(EnvVar).where(EnvVar.scope == scope, EnvVar.name == name))
    if row is None:
        row = EnvVar(scope=scope, project_id=project_id, name=name, value=body.value, secret=body.secret)
        db.add(row)
    else:
        row.value, row.secret = body.value, body.secret
    return row


def remove(db: Session, scope: str, name: str) -> None:
    row = db.scalar(select(EnvVar).where(EnvVar.scope == scope, EnvVar.name == name))
    if row is None:
        raise ApiError(404, "no variable %r here" % name[:128])
    db.delete(row)
