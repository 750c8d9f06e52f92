"""Who may reach a session's engine, and from where (see sessions/engine_origin.py).

- On an engine origin (per-session subdomain or the engine port) the only credential is the
  session's engine cookie; state-changing requests and WebSockets must come from that same
  origin (Origin header). Anything but engine paths answers 404 there: no workbench API, no
  pages.
- On the workbench's origin, engine paths answer API keys (Bearer) only, never the sign-in
  cookie, and whatever they return is sandboxed by CSP (an opaque origin) should a browser
  render it.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Optional

from fastapi import Depends, Request, WebSocket, WebSocketException
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection
from starlette.requests import Request as HttpRequest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..sessions import engine_origin
from ..store.models import User, WebSession, utcnow
from ..store.sessions_models import EngineSession
from .auth import SESSION_COOKIE, Caller, current_caller
from .deps import get_db
from .errors import ApiError
from .permissions import Access, decide

ACTION = "session.use"
# what engine content on the workbench's origin may do if a browser ever renders it: run in an
# opaque origin, without the workbench's cookies and storage
WORKBENCH_ENGINE_CSP = "sandbox allow-scripts allow-forms allow-popups allow-downloads"


def where(conn: HTTPConnection) -> engine_origin.Where:
    return conn.scope.get("state", {}).get("engine_origin", engine_origin.WORKBENCH)


class EngineOriginGuard:
    """ASGI middleware: classify each request's origin, keep engine origins to engine paths,
    and sandbox engine responses served on the workbench's origin."""

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        here = engine_origin.classify(scope, self.settings)
        scope.setdefault("state", {})["engine_origin"] = here
        path = scope.get("path", "")
        if here.engine and not engine_origin.allowed_on_engine_origin(here, path):
            await _refuse(scope, receive, send)
            return
        if here.engine or engine_origin.engine_path_session(path) is None \
                or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sandboxed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"content-security-policy"]
                headers.append((b"content-security-policy", WORKBENCH_ENGINE_CSP.encode()))
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, sandboxed)


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    reason = "this address serves session engines only; open the workbench's own address"
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
        return
    body = json.dumps({"error": reason, "detail": None}).encode()
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def install(app: Any, settings: Any) -> None:
    app.add_middleware(EngineOriginGuard, settings=settings)


# --- who is calling on an engine path -------------------------------------------------------------

def _session_for(db: Session, conn: HTTPConnection) -> EngineSession:
    sid = engine_origin.engine_path_session(conn.url.path)
    session = db.get(EngineSession, sid) if sid is not None else None
    if session is None:
        raise ApiError(404, "session not found")
    return session


def _check_host(conn: HTTPConnection, session: EngineSession) -> None:
    """In subdomain mode a host answers for its own session only (tag included)."""
    settings = conn.app.state.server.settings
    if settings.engine_origin != engine_origin.SUBDOMAIN:
        return
    host = engine_origin.split_host(conn.headers.get("host", ""))[0].lower()
    expected = engine_origin.engine_host(settings.data_dir, settings.domain.lower(), session.id,
                                         session.name)
    if host != expected:
        raise ApiError(404, "session not found")


def engine_caller(conn: HTTPConnection, db: Session, websocket: bool) -> Caller:
    """The caller of an engine path, by the rules of the origin it came to."""
    here = where(conn)
    if not here.engine:
        if conn.headers.get("authorization", "").lower().startswith("bearer "):
            request = conn if isinstance(conn, HttpRequest) \
                else HttpRequest(dict(conn.scope, type="http", method="GET"))
            caller = current_caller(request, db)
            if caller.via == "api_key":
                return caller
        hint = " (the workbench sign-in is not accepted here)" \
            if SESSION_COOKIE in conn.cookies else ""
        raise ApiError(401, "engine content is served on its own origin%s; open it from the "
                            "session page (POST /api/v1/sessions/ID/engine-access) or send an "
                            "API key as 'Authorization: Bearer <key>'" % hint)
    method = "WEBSOCKET" if websocket else conn.scope.get("method", "GET")
    if method not in ("GET", "HEAD", "OPTIONS") and not engine_origin.same_origin(conn.scope):
        raise ApiError(403, "cross-origin request to an engine refused; use the page the engine "
                            "serves")
    session = _session_for(db, conn)
    _check_host(conn, session)
    settings = conn.app.state.server.settings
    claims = engine_origin.verify(settings.data_dir,
                                  conn.cookies.get(engine_origin.cookie_name(session.id), ""),
                                  "cookie", session.id, session.name)
    user = _valid_user(db, claims) if claims is not None else None
    if user is None:
        raise ApiError(401, "this engine address needs its own sign-in; open JupyterLab again "
                            "from the session page in the workbench")
    return Caller(user=user, via="engine")


def _valid_user(db: Session, claims: engine_origin.Claims) -> Optional[User]:
    """The credential's user while they are active and, for a credential minted in a browser,
    while that sign-in lasts (signing out ends engine access too)."""
    user = db.get(User, claims.user_id)
    if user is None or not user.is_active:
        return None
    if claims.web_session_id:
        ws = db.get(WebSession, claims.web_session_id)
        if ws is None or ws.user_id != user.id or ws.expires_at <= utcnow():
            return None
    return user


def require_engine() -> Any:
    """`require("session.use")` for the engine proxy's HTTP routes."""
    def dependency(request: Request, db: Session = Depends(get_db)) -> Access:
        access = decide(ACTION, engine_caller(request, db, websocket=False), request, db)
        request.state.permission = ACTION
        return access

    dependency.permission_action = ACTION  # type: ignore[attr-defined]
    return Depends(dependency)


def _websocket_db(websocket: WebSocket) -> Iterator[Session]:
    session = websocket.app.state.server.db.sessionmaker()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def require_engine_websocket() -> Any:
    """The same for the engine proxy's WebSocket route; a refusal closes with 1008."""
    def dependency(websocket: WebSocket, db: Session = Depends(_websocket_db)) -> Access:
        try:
            access = decide(ACTION, engine_caller(websocket, db, websocket=True), websocket, db)
        except ApiError as e:
            raise WebSocketException(code=1008, reason=e.error[:120])
        websocket.state.permission = ACTION
        return access

    dependency.permission_action = ACTION  # type: ignore[attr-defined]
    return Depends(dependency)


def first_use(state: Any, claims: Any) -> bool:
    """Whether this launch token is used for the first time, in whichever worker it arrives
    (the controller keeps the used ones when there are several)."""
    if state.controller is not None:
        return bool(state.controller.call("engine.launch_first_use", nonce=claims.nonce,
                                          expires=claims.expires))
    return engine_origin.used_launches.first_use(claims.nonce, claims.expires)


def require_launch() -> Callable[..., Access]:
    """The launch exchange on an engine origin: a valid, unused launch token for this session
    stands for its user, whose right to use the session is then checked as usual."""
    def dependency(request: Request, db: Session = Depends(get_db)) -> Access:
        if not where(request).engine:
            raise ApiError(404, "not found")
        session = _session_for(db, request)
        _check_host(request, session)
        settings = request.app.state.server.settings
        claims = engine_origin.verify(settings.data_dir, request.query_params.get("token", ""),
                                      "launch", session.id, session.name)
        user = _valid_user(db, claims) if claims is not None else None
        if claims is None or user is None or not first_use(request.app.state.server, claims):
            raise ApiError(401, "this JupyterLab link has expired or was used already; open it "
                                "again from the session page")
        access = decide(ACTION, Caller(user=user, via="engine"), request, db)
        request.state.permission = ACTION
        request.state.engine_claims = claims
        return access

    dependency.permission_action = ACTION  # type: ignore[attr-defined]
    return Depends(dependency)
