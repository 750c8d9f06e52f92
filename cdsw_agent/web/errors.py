"""Errors on pages: a browser that asks for a page gets a page, not the API's JSON.

The API's handlers (server/errors.py) stay in charge of everything else; these wrap them and
only take over for browser navigations (Accept: text/html) outside /api/. A 401 there sends the
browser to the sign-in page and back; other errors render with the same message the API gives.
"""

from __future__ import annotations

from typing import Awaitable, Callable
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..server.errors import ApiError, permission_first
from .render import page

Handler = Callable[[Request, Exception], Awaitable[Response]]
API_PATHS = "/api/"


def wants_page(request: Request) -> bool:
    return (request.method in ("GET", "HEAD") and not request.url.path.startswith(API_PATHS)
            and "text/html" in request.headers.get("accept", ""))


def sign_in_url(request: Request) -> str:
    target = request.url.path + ("?" + request.url.query if request.url.query else "")
    return "/signin?next=" + quote(target, safe="/")


def _error_page(request: Request, status: int, message: str) -> Response:
    titles = {401: "Sign in required", 403: "Not allowed", 404: "Not found", 422: "Bad request"}
    return page(request, "error.html", title=titles.get(status, "Error"), status_code=status,
                status=status, message=message)


def _wrap(original: Handler, status_and_message: Callable[[Exception], tuple]) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        if not wants_page(request):
            return await original(request, exc)
        status, message = status_and_message(exc)
        if status == 401:
            return RedirectResponse(sign_in_url(request), status_code=303)
        return _error_page(request, status, message)
    return handler


def install(app: FastAPI) -> None:
    """Call after server.errors.install: wraps its handlers for page requests."""
    handlers = app.exception_handlers
    app.add_exception_handler(ApiError, _wrap(handlers[ApiError], lambda e: (e.status, e.error)))
    app.add_exception_handler(
        StarletteHTTPException,
        _wrap(handlers[StarletteHTTPException],
              lambda e: (e.status_code, "no such page" if e.status_code == 404 else str(e.detail))))
    app.add_exception_handler(
        RequestValidationError,
        permission_first(_wrap(handlers[RequestValidationError], _validation)))


def _validation(exc: Exception) -> tuple:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {}
    if first.get("loc", ("",))[0] == "path":  # /projects/abc: not a page that exists
        return 404, "no such page"
    field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
    return 422, "%s: %s" % (field, first.get("msg", "invalid"))
