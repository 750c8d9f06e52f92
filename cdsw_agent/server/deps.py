"""FastAPI dependencies shared by the routes: the server state and a database session."""

from __future__ import annotations

from typing import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from .state import ServerState


def get_state(request: Request) -> ServerState:
    return request.app.state.server


def get_db(request: Request) -> Iterator[Session]:
    """A session per request. Routes commit explicitly; anything uncommitted is rolled back."""
    session = request.app.state.server.db.sessionmaker()
    try:
        yield session
    finally:
        session.rollback()
        session.close()
