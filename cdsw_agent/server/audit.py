"""Audit log of security-relevant actions: sign-ins, failures, keys, roles, deletions."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import Request
from sqlalchemy.orm import Session

from ..store.models import AuditEvent, User


def client_ip(request: Optional[Request]) -> str:
    if request is None or request.client is None:
        return ""
    return request.client.host


def record(db: Session, action: str, actor: Optional[User] = None, target: str = "",
           request: Optional[Request] = None, actor_name: str = "", **detail: Any) -> None:
    """Adds the event to the caller's transaction, so it is kept exactly when the action is."""
    db.add(AuditEvent(actor_id=actor.id if actor else None,
                      actor=actor.username if actor else actor_name,
                      action=action, target=target[:255], detail=detail, ip=client_ip(request)))


def record_now(state_db: Any, action: str, **kwargs: Any) -> None:
    """Records in its own transaction: for failures whose request transaction is rolled back."""
    with state_db.session() as s:
        record(s, action, **kwargs)
