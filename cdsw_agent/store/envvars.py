"""Where engine environment variables live: scope "site" or "p:<project id>" in env_vars."""

from __future__ import annotations

from typing import Dict

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import EnvVar

SITE = "site"


def project_scope(project_id: int) -> str:
    return "p:%d" % project_id


def effective(db: Session, project_id: int) -> Dict[str, str]:
    """What an engine of the project sees: site variables, overridden by the project's."""
    env: Dict[str, str] = {}
    for scope in (SITE, project_scope(project_id)):
        env.update({v.name: v.value for v in db.scalars(select(EnvVar).where(EnvVar.scope == scope))})
    return env
