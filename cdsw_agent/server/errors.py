"""API errors: every failure answers JSON {"error": ..., "detail": ...} with the right status."""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


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


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.error, exc.detail), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")}
                   for e in exc.errors()]
        first = details[0] if details else {"field": "request", "message": "invalid"}
        return JSONResponse(body("invalid request: %s: %s" % (first["field"], first["message"]),
                                 details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        return JSONResponse(body(message.lower() if exc.status_code == 404 else message),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # Routes check for duplicates first; this catches the race between check and insert.
        return JSONResponse(body("conflict with an existing record"), status_code=409)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(body("internal error", "see the master's log"), status_code=500)


def first_line(e: Optional[BaseException]) -> str:
    text = str(e or "").strip()
    return text.splitlines()[0] if text else type(e).__name__
