"""FastAPI dependencies shared by the routes: the server state and a database session.

Both are `async def`: FastAPI runs a plain `def` dependency in a worker thread, and a hop to the
thread pool and back costs more than these do (issue 14: five hops per authenticated call).
"""

from __future__ import annotations

from typing import AsyncIterator

import anyio
import anyio.to_thread
from fastapi import Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..store.db import problem_kind
from .state import ServerState


async def get_state(request: Request) -> ServerState:
    return request.app.state.server


def release(session: Session) -> None:
    """End the request's session: anything uncommitted is rolled back."""
    try:
        session.rollback()
    except DBAPIError as e:
        # the connection died under us (database restart): there is nothing left to undo,
        # and the answer may already be on its way; drop the connection, keep the answer
        if problem_kind(e) is None:
            raise
        session.invalidate()
    session.close()


async def get_db(request: Request) -> AsyncIterator[Session]:
    """A session per request. Routes commit explicitly; anything uncommitted is rolled back.

    Opening a session does no I/O (a connection is taken at its first query, in the route's
    thread), so it happens on the event loop. Ending it does I/O only while a transaction is
    open: a local ROLLBACK on SQLite, which never waits for a lock, runs on the event loop; on
    PostgreSQL it is a network round trip, so it runs in a worker thread, with its own limiter
    (never queued behind the routes waiting for a connection) and shielded from cancellation,
    as FastAPI does for a `def` dependency's exit."""
    db = request.app.state.server.db
    session = db.sessionmaker()
    try:
        yield session
    finally:
        if not session.in_transaction():  # never used, or committed: nothing left to end
            session.close()
        elif db.engine.dialect.name == "sqlite":
            release(session)
        else:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(release, session,
                                               limiter=anyio.CapacityLimiter(1))
