"""API errors: every failure answers JSON {"error": ..., "detail": ...} with the right status."""

from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..store.db import DAMAGED, DISK_FULL, UNAVAILABLE, problem_kind

log = logging.getLogger(__name__)
# seconds a client should wait before retrying while the database is unreachable
RETRY_AFTER_SECONDS = 5
# while the database is down every request fails the same way: one log line per reason per
# this many seconds (with the count of the ones not logged), never a traceback per request
OUTAGE_LOG_INTERVAL = 10.0
Handler = Callable[[Request, Any], Awaitable[Any]]


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None):
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


def not_found(what: str = "not found") -> ApiError:
    return ApiError(404, what)


def conflict(what: str, detail: Any = None) -> ApiError:
    return ApiError(409, what, detail)


def bad_request(what: str, detail: Any = None) -> ApiError:
    return ApiError(400, what, detail)


def unprocessable(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid request: %s: %s" % (field, message),
                    [{"field": field, "message": message}])


def body(error: str, detail: Any = None) -> dict:
    return {"error": error, "detail": detail}


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def permission_first(handler: Handler) -> Handler:
    """`handler` of RequestValidationError, after the permission its route was to decide in
    its own thread (permissions.Pending), which the invalid parameters came before: a caller
    who may not make the call gets the refusal (through the app's ApiError handler), not
    what was wrong with their input, as when the permission was decided first."""
    async def handler_after_permission(request: Request, exc: Exception) -> Any:
        pending = getattr(request.state, "pending_permission", None)
        if pending is not None and pending.access is None:
            def refusal() -> Optional[ApiError]:
                with request.app.state.server.db.session() as db:  # the request's is closed
                    try:
                        pending.decide(db)
                    except ApiError as e:
                        return e
                return None

            refused = await run_in_threadpool(refusal)
            if refused is not None:
                return await request.app.exception_handlers[ApiError](request, refused)
        return await handler(request, exc)
    return handler_after_permission


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.error, exc.detail), status_code=exc.status)

    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")}
                   for e in exc.errors()]
        first = details[0] if details else {"field": "request", "message": "invalid"}
        return JSONResponse(body("invalid request: %s: %s" % (first["field"], first["message"]),
                                 details), status_code=422)

    app.add_exception_handler(RequestValidationError, permission_first(_validation))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        return JSONResponse(body(message.lower() if exc.status_code == 404 else message),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # Routes check for duplicates first; this catches the race between check and insert.
        return JSONResponse(body("conflict with an existing record"), status_code=409)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        kind = problem_kind(exc)
        if kind is None and isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            kind = DISK_FULL
        if kind is None:
            raise exc  # not an outage: the catch-all below logs it with its traceback
        _outage_log.note(kind, request, exc)
        if kind == DISK_FULL:
            return JSONResponse(body("no space left on the data volume",
                                     "the administrator must free space or grow the volume; "
                                     "nothing was saved"), status_code=507)
        if kind == DAMAGED:
            return JSONResponse(body("the database is damaged",
                                     "the administrator must restore a backup "
                                     "(`cdsw db restore`)"), status_code=500)
        assert kind == UNAVAILABLE
        return JSONResponse(body("the database is unavailable",
                                 "try again in a few seconds"), status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    for cls in (DBAPIError, PoolTimeoutError, OSError):
        app.add_exception_handler(cls, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(body("internal error", "see the master's log"), status_code=500)


class _OutageLog:
    """One warning per kind of outage per OUTAGE_LOG_INTERVAL, counting the requests between."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: Dict[str, Tuple[float, int]] = {}  # kind -> (last logged, not logged since)

    def note(self, kind: str, request: Request, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            last, skipped = self._last.get(kind, (float("-inf"), 0))
            if now - last < OUTAGE_LOG_INTERVAL:
                self._last[kind] = (last, skipped + 1)
                return
            self._last[kind] = (now, 0)
        root = getattr(exc, "orig", None) or exc
        log.warning("database %s on %s %s: %s%s", kind.replace("_", " "), request.method,
                    request.url.path, first_line(root),
                    " (%d more request(s) failed the same way)" % skipped if skipped else "")


_outage_log = _OutageLog()


def first_line(e: Optional[BaseException]) -> str:
    text = str(e or "").strip()
    return text.splitlines()[0] if text else type(e).__name__
