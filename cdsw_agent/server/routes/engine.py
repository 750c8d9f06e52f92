"""The router: a session's jupyter_server through the master, on the engine's own origin.

- POST /sessions/ID/engine-access (workbench, CSRF-checked): a one-time launch URL on the
  engine origin; GET /sessions/ID/engine-launch there exchanges it for the engine cookie.
- /sessions/ID/engine/... (HTTP and WebSocket): jupyter_server itself, with the engine cookie on
  the engine origin, or an API key anywhere (see server/engine_access.py). A JupyterLab save
  of a job's script by the job's person approves their version (server/script_approvals.py).
- /sessions/ID/terminals/NAME/websocket: the workbench's own terminal tab (terminado frames
  only, never a page), with the workbench sign-in.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import anyio
from fastapi import Depends, Path, Query, Request, WebSocket
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from ...sessions import engine_origin, proxy
from ...sessions.launch import base_path
from ...sessions.manager import SessionError
from ...sessions.monitor import manager_for
from .. import script_approvals
from ..deps import get_state
from ..engine_access import require_engine, require_engine_websocket, require_launch
from ..errors import ApiError
from ..permissions import Access, api_router, require, require_websocket
from ..schemas import Id, Strict
from ..state import ServerState

router = api_router(tags=["sessions"])
ONE = "/sessions/{session_id}"
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class EngineAccessIn(Strict):
    path: str = Field(default="lab", max_length=200,
                      description="engine path to open after signing in, relative to the "
                                  "session's engine base path (lab, tree, ...)")


class EngineAccessOut(BaseModel):
    url: str  # open in a browser within expires_in seconds; works once
    origin: str  # where this session's engine content is served
    expires_in: int


def _running(state: ServerState, session_id: int) -> Any:
    try:
        return manager_for(state).running(session_id)
    except SessionError as e:
        raise ApiError(e.status, str(e))


@router.post(ONE + "/engine-access", response_model=EngineAccessOut)
def engine_access(session_id: Id, body: EngineAccessIn, request: Request,
                  access: Access = require("session.use"),
                  state: ServerState = Depends(get_state)) -> EngineAccessOut:
    settings = state.settings
    if settings.engine_origin == engine_origin.PORT and not settings.engine_port:
        raise ApiError(409, "engine content is not served to browsers here; set "
                            "cdsw.engine.port (or cdsw.engine.origin=subdomain) and restart "
                            "the master")
    nxt = engine_origin.safe_next(body.path)
    if nxt is None:
        raise ApiError(422, "invalid request: path: expected a relative engine path such as lab")
    session, _ = _running(state, session_id)
    if settings.engine_origin == engine_origin.PORT and session.user_id != access.user.id:
        # every session's pages share the engine port's origin: a page of someone else's
        # session could then reach the viewer's own sessions there
        raise ApiError(403, "JupyterLab opens only your own sessions here, as all sessions share "
                            "one engine origin (cdsw.engine.origin=port); use the console and "
                            "terminal, or ask an administrator for subdomain engine origins")
    ws = access.caller.web_session
    token = engine_origin.mint(settings.data_dir, "launch", session.id, session.name,
                               access.user.id, ws.id if ws is not None else 0)
    host, port = engine_origin.split_host(request.headers.get("host", settings.domain))
    origin = engine_origin.engine_origin_url(settings, session.id, session.name, host, port)
    return EngineAccessOut(url=engine_origin.launch_url(origin, session.id, token, nxt),
                           origin=origin, expires_in=engine_origin.LAUNCH_SECONDS)


@router.get(ONE + "/engine-launch", include_in_schema=False)
def engine_launch(session_id: Id, request: Request, next: str = Query(default="lab"),
                  access: Access = require_launch()) -> Response:
    settings = request.app.state.server.settings
    claims = request.state.engine_claims
    session = access.engine_session
    assert session is not None
    nxt = engine_origin.safe_next(next)
    response = RedirectResponse(base_path(session_id) + (nxt or "lab"), status_code=303)
    cookie = engine_origin.mint(settings.data_dir, "cookie", session_id, session.name,
                                claims.user_id, claims.web_session_id)
    response.set_cookie(engine_origin.cookie_name(session_id), cookie,
                        max_age=engine_origin.COOKIE_SECONDS,
                        path=engine_origin.cookie_path(session_id), httponly=True,
                        samesite="lax", secure=settings.tls_enable)
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


async def engine_http(session_id: Id, path: str, request: Request,
                      access: Access = require_engine()) -> Response:
    manager = manager_for(request.app.state.server)
    try:
        _, ep = await anyio.to_thread.run_sync(manager.running, session_id)
    except SessionError as e:
        raise ApiError(e.status, str(e))
    state = request.app.state.server
    script = script_approvals.saved_script(request.method, path)
    watched = None
    if script is not None and 0 < _length(request) <= script_approvals.MAX_BODY:
        watched = await anyio.to_thread.run_sync(script_approvals.watch, state, access, script)
    if watched is None:
        return await proxy.http(request, ep, path, _traffic(manager, session_id))
    # a job's person saving its script in JupyterLab: their save approves their version
    body = await request.body()
    response = await proxy.http(request, ep, path, _traffic(manager, session_id), body=body)
    data = script_approvals.saved_bytes(body) if response.status_code in (200, 201) else None
    if data is not None:
        await anyio.to_thread.run_sync(script_approvals.approve_save, state, access, request,
                                       watched, data)
    return response


def _length(request: Request) -> int:
    try:
        return int(request.headers.get("content-length", ""))
    except ValueError:
        return 0


for _method in PROXY_METHODS:  # one operation per method, each with its own id
    router.add_api_route(ONE + "/engine/{path:path}", engine_http, methods=[_method],
                         response_class=StreamingResponse, name="engine_%s" % _method.lower(),
                         operation_id="session_engine_%s" % _method.lower(),
                         summary="jupyter_server of the session, %s (WebSockets on the same "
                                 "path); browsers reach it on the engine origin" % _method)


async def _bridge(websocket: WebSocket, session_id: int, path: str) -> None:
    manager = manager_for(websocket.app.state.server)
    try:
        _, ep = await anyio.to_thread.run_sync(manager.running, session_id)
    except SessionError as e:
        await websocket.close(code=1008 if e.status == 404 else 1011, reason=str(e)[:120])
        return
    await proxy.websocket(websocket, ep, path, _traffic(manager, session_id))


@router.websocket(ONE + "/engine/{path:path}")
async def engine_websocket(websocket: WebSocket, path: str,
                           session_id: int = Path(ge=1, le=2**53),
                           access: Access = require_engine_websocket()) -> None:
    await _bridge(websocket, session_id, path)


@router.websocket(ONE + "/terminals/{name}/websocket")
async def terminal_websocket(websocket: WebSocket,
                             name: str = Path(pattern=r"^[A-Za-z0-9_-]{1,64}$"),
                             session_id: int = Path(ge=1, le=2**53),
                             access: Access = require_websocket("session.use")) -> None:
    await _bridge(websocket, session_id, "terminals/websocket/" + name)


def _traffic(manager: Any, session_id: int) -> Callable[[], None]:
    """Proxied traffic counts as activity: recorded in a thread (a database write must not
    block the event loop), at most every ACTIVITY_WRITE_SECONDS per session."""
    def note() -> None:
        if manager.activity_due(session_id):
            threading.Thread(target=manager.touch, args=(session_id, True), daemon=True).start()
    return note
