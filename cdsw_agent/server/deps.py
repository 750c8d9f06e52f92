"""FastAPI dependencies shared by the routes: the server state and a database session."""

from __future__ import annotations

from typing import Iterator

from fastapi import Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..store.db import problem_kind
from .state import ServerState


def get_state(request: Request) -> ServerState:
    return request.app.state.server


def get_db(request: Request) -> Iterator[Session]:
    """A session per request. Routes commit explicitly; anything uncommitted is rolled back."""
    session = request.app.state.server.db.sessionmaker()
    try:
        yield session
    finally:
        try:
            session.rollback()
        except DBAPIError as e:
            # the connection died under us (database restart): there is nothing left to undo,
            # and the answer may already be on its way; drop the connection, keep the answer
            if problem_kind(e) is None:
                raise
            session.invalidate()
        session.close()
