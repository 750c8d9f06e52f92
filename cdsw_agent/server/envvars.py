"""Engine environment variables at site scope ("site") and project scope ("p:<id>").

One place for their naming rule, storage and masking; the project and site routes use it.
"""

from __future__ import annotations

import re
from typing import List, Optional

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.models import EnvVar
from .errors import ApiError
from .schemas import Strict

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SITE = "site"


def project_scope(project_id: int) -> str:
    return "p:%d" % project_id


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


def effective(db: Session, project_id: int) -> dict:
    """What an engine of the project sees: site variables, overridden by the project's."""
    env = {v.name: v.value for v in db.scalars(select(EnvVar).where(EnvVar.scope == SITE))}
    env.update({v.name: v.value for v in db.scalars(
        select(EnvVar).where(EnvVar.scope == project_scope(project_id)))})
    return env
