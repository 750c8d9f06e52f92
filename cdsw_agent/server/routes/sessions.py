"""Interactive sessions: start, follow, execute code with streamed outputs, interrupt, restart,
terminals, the console log and sharing. The router's proxy to the engine's jupyter_server is in
routes/engine.py.

Who may do what is decided in permissions.py (rule kind "session"): project viewers list
sessions; only the owner and those the owner shared with reach the kernel.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import AsyncIterator, List, Optional

import anyio
from fastapi import Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...sessions import completion, engine_client, transcript
from ...sessions.engine_client import EngineUnavailable
from ...sessions.launch import SessionLaunchError, base_path, local_has_jupyterlab
from ...sessions.manager import SessionError
from ...sessions.monitor import manager_for
from ...store.models import EngineImage, User
from ...store.sessions_models import ACTIVE_STATUSES, SHARE_MODES, EngineSession, SessionShare
from .. import audit
from ..deps import get_db, get_state
from ..errors import ApiError, unprocessable
from ..permissions import (Access, api_router, project_role, require,
                           session_share_mode, sharing_allowed)
from ..schemas import Id, Strict
from ..state import ServerState

router = api_router(tags=["sessions"])
ONE = "/sessions/{session_id}"


class SessionCreate(Strict):
    kernel: str = Field(default="python3", pattern=r"^(python3|r|scala)$")
    engine_image_id: Optional[int] = Field(default=None, ge=1, le=2**53)
    profile_id: Optional[int] = Field(default=None, ge=1, le=2**53)


class SessionOut(BaseModel):
    id: int
    project_id: int
    owner: str
    kernel: str
    image: str
    engine_image_id: Optional[int]
    profile_id: Optional[int]
    status: str  # starting | running | stopped | failed
    stopping: bool
    reason: str
    node: Optional[str]
    created_at: dt.datetime
    started_at: Optional[dt.datetime]
    last_activity_at: dt.datetime
    finished_at: Optional[dt.datetime]
    your_access: Optional[str]  # owner | interactive | view | None (metadata only)
    engine_url: str  # jupyter_server through the router (browsers: POST .../engine-access)
    jupyterlab_url: Optional[str]  # when the image has JupyterLab


class ExecuteIn(Strict):
    code: str = Field(max_length=1 << 20)


class CompleteIn(Strict):
    code: str = Field(max_length=1 << 20)
    cursor_pos: Optional[int] = Field(default=None, ge=0)  # default: the end of code


class CompleteOut(BaseModel):
    matches: List[str]
    cursor_start: int  # the matches replace code[cursor_start:cursor_end]
    cursor_end: int


class ShareIn(Strict):
    mode: str = Field(pattern=r"^(view|interactive)$")


class ShareOut(BaseModel):
    user_id: int
    username: str
    mode: str
    created_at: dt.datetime


class TerminalOut(BaseModel):
    name: str
    websocket: str  # path of the terminal's WebSocket (workbench sign-in) through the router


class Done(BaseModel):
    message: str


def session_out(db: Session, session: EngineSession, user: User) -> SessionOut:
    image = db.get(EngineImage, session.engine_image_id) if session.engine_image_id else None
    lab = "jupyterlab" in (image.editors or []) if image is not None \
        else session.node == "local" and local_has_jupyterlab()
    engine = base_path(session.id)
    return SessionOut(
        id=session.id, project_id=session.project_id, owner=session.user.username,
        kernel=session.kernel, image=session.image, engine_image_id=session.engine_image_id,
        profile_id=session.profile_id, status=session.status,
        stopping=session.status in ACTIVE_STATUSES and session.stop_requested is not None,
        reason=session.reason, node=session.node, created_at=session.created_at,
        started_at=session.started_at, last_activity_at=session.last_activity_at,
        finished_at=session.finished_at, your_access=session_share_mode(db, user, session),
        engine_url=engine, jupyterlab_url=engine + "lab" if lab else None)


def _fresh(db: Session, access: Access) -> EngineSession:
    session = access.engine_session
    assert session is not None
    db.refresh(session)
    return session


def _api_error(e: Exception) -> ApiError:
    return ApiError(getattr(e, "status", 503), str(e))


# --- lifecycle -------------------------------------------------------------------------------

@router.get("/projects/{project_id}/sessions", response_model=List[SessionOut])
def list_sessions(project_id: Id, active: bool = Query(default=False),
                  access: Access = require("project.read"),
                  db: Session = Depends(get_db)) -> list:
    q = select(EngineSession).where(EngineSession.project_id == project_id)
    if active:
        q = q.where(EngineSession.status.in_(ACTIVE_STATUSES))
    return [session_out(db, s, access.user) for s in db.scalars(q.order_by(EngineSession.id))]


@router.post("/projects/{project_id}/sessions", response_model=SessionOut, status_code=201)
def start_session(project_id: Id, body: SessionCreate, request: Request,
                  access: Access = require("project.run"), db: Session = Depends(get_db),
                  state: ServerState = Depends(get_state)) -> SessionOut:
    db.rollback()  # the manager writes in its own transactions
    try:
        session_id = manager_for(state).start(project_id, access.user.id, body.kernel,
                                              body.engine_image_id, body.profile_id)
    except SessionLaunchError as e:
        raise _api_error(e)
    session = db.get(EngineSession, session_id)
    assert session is not None
    audit.record(db, "session.start", access.user, target="%d/%d" % (project_id, session_id),
                 request=request, session_id=session_id, kernel=body.kernel, image=session.image)
    db.commit()
    return session_out(db, session, access.user)


@router.get(ONE, response_model=SessionOut)
def get_session(session_id: Id, access: Access = require("session.read"),
                db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> SessionOut:
    session = access.engine_session
    assert session is not None
    if session.status in ACTIVE_STATUSES:
        db.rollback()
        manager_for(state).sync_session(session_id)
        session = _fresh(db, access)
    return session_out(db, session, access.user)


@router.post(ONE + "/stop", response_model=SessionOut)
def stop_session(session_id: Id, request: Request, access: Access = require("session.stop"),
                 db: Session = Depends(get_db), state: ServerState = Depends(get_state)) -> SessionOut:
    db.rollback()
    try:
        manager_for(state).stop(session_id, "user", "stopped by %s" % access.user.username)
    except SessionError as e:
        raise _api_error(e)
    session = _fresh(db, access)
    audit.record(db, "session.stop", access.user, target="%d/%d" % (session.project_id, session_id),
                 request=request, session_id=session_id, owner=session.user.username)
    db.commit()
    return session_out(db, session, access.user)


# --- the console -----------------------------------------------------------------------------

@router.post(ONE + "/execute", response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}},
                              "description": "one JSON event per line, in the kernel's order: "
                                             "stream, display_data, execute_result, error, "
                                             "clear_output; last a result with the status"}})
def execute(session_id: Id, body: ExecuteIn, access: Access = require("session.use"),
            state: ServerState = Depends(get_state)) -> StreamingResponse:
    manager = manager_for(state)
    try:
        session, ep = manager.running(session_id)
    except SessionError as e:
        raise _api_error(e)
    manager.touch(session_id, force=True)
    data_dir = state.settings.data_dir
    transcript.append(data_dir, session_id, {"kind": "input", "code": body.code,
                                             "user": access.user.username})
    kernel_id = session.kernel_id or ""

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in engine_client.execute(ep, kernel_id, body.code):
                transcript.append(data_dir, session_id, dict(event, kind="output"))
                yield (json.dumps(event) + "\n").encode()
        except EngineUnavailable as e:
            event = {"type": "error", "ename": "EngineUnavailable", "evalue": str(e),
                     "traceback": [str(e)]}
            transcript.append(data_dir, session_id, dict(event, kind="output"))
            yield (json.dumps(event) + "\n").encode()
        await anyio.to_thread.run_sync(manager.touch, session_id, True)

    return StreamingResponse(events(), media_type="application/x-ndjson")


@router.post(ONE + "/complete", response_model=CompleteOut)
async def complete(session_id: Id, body: CompleteIn, access: Access = require("session.use"),
                   state: ServerState = Depends(get_state)) -> CompleteOut:
    """Code completion from the session's kernel (the console's Tab key)."""
    manager = manager_for(state)
    try:
        session, ep = await anyio.to_thread.run_sync(manager.running, session_id)
    except SessionError as e:
        raise _api_error(e)
    cursor = len(body.code) if body.cursor_pos is None else body.cursor_pos
    if cursor > len(body.code):
        raise unprocessable("cursor_pos", "must be at most the length of code (%d)"
                            % len(body.code))
    try:
        found = await completion.complete(ep, session.kernel_id or "", body.code, cursor)
    except EngineUnavailable as e:
        raise ApiError(503, str(e))
    return CompleteOut(**found)


def _kernel_action(state: ServerState, access: Access, session_id: int, what: str) -> Done:
    manager = manager_for(state)
    try:
        session, ep = manager.running(session_id)
        (engine_client.interrupt if what == "interrupt" else engine_client.restart)(
            ep, session.kernel_id or "")
    except (SessionError, EngineUnavailable) as e:
        raise _api_error(e)
    manager.touch(session_id, force=True)
    transcript.append(state.settings.data_dir, session_id,
                      {"kind": "event", "event": what, "user": access.user.username})
    return Done(message="kernel %s" % ("interrupted" if what == "interrupt" else "restarted"))


@router.post(ONE + "/interrupt", response_model=Done)
def interrupt(session_id: Id, access: Access = require("session.use"),
              state: ServerState = Depends(get_state)) -> Done:
    return _kernel_action(state, access, session_id, "interrupt")


@router.post(ONE + "/restart", response_model=Done)
def restart(session_id: Id, access: Access = require("session.use"),
            state: ServerState = Depends(get_state)) -> Done:
    return _kernel_action(state, access, session_id, "restart")


@router.post(ONE + "/terminals", response_model=TerminalOut, status_code=201)
def open_terminal(session_id: Id, access: Access = require("session.use"),
                  state: ServerState = Depends(get_state)) -> TerminalOut:
    manager = manager_for(state)
    try:
        _, ep = manager.running(session_id)
        name = engine_client.create_terminal(ep)
    except (SessionError, EngineUnavailable) as e:
        raise _api_error(e)
    manager.touch(session_id, force=True)
    return TerminalOut(name=name, websocket="/api/v1/sessions/%d/terminals/%s/websocket"
                       % (session_id, name))


@router.get(ONE + "/log", response_class=Response,
            responses={200: {"content": {"application/x-ndjson": {}},
                             "description": "the console transcript from `offset` (bytes), one "
                                            "JSON entry per line (input, output, event); the "
                                            "X-Log-Offset header is the offset to ask for next"}})
def session_log(session_id: Id, offset: int = Query(default=0, ge=0, le=2**53),
                limit: int = Query(default=1 << 20, ge=1, le=16 << 20),
                access: Access = require("session.view"),
                state: ServerState = Depends(get_state)) -> Response:
    session = access.engine_session
    assert session is not None
    data, next_offset = transcript.read(state.settings.data_dir, session_id, offset, limit)
    return Response(data, media_type="application/x-ndjson", headers={
        "X-Log-Offset": str(next_offset), "X-Session-Status": session.status})


# --- sharing ---------------------------------------------------------------------------------

def _share_out(share: SessionShare) -> ShareOut:
    return ShareOut(user_id=share.user_id, username=share.user.username, mode=share.mode,
                    created_at=share.created_at)


@router.get(ONE + "/shares", response_model=List[ShareOut])
def list_shares(session_id: Id, access: Access = require("session.share"),
                db: Session = Depends(get_db)) -> list:
    shares = db.scalars(select(SessionShare).where(SessionShare.session_id == session_id)
                        .order_by(SessionShare.user_id))
    return [_share_out(s) for s in shares]


@router.put(ONE + "/shares/{user_id}", response_model=ShareOut)
def share(session_id: Id, user_id: Id, body: ShareIn, request: Request,
          access: Access = require("session.share"), db: Session = Depends(get_db),
          state: ServerState = Depends(get_state)) -> ShareOut:
    """The owner lends their identity (audited); refused while the site forbids sharing."""
    session = access.engine_session
    assert session is not None and body.mode in SHARE_MODES
    if not sharing_allowed(db, state.settings):
        raise ApiError(403, "session sharing is turned off on this site (site setting "
                            "session_sharing_allowed); ask a site administrator")
    target = db.get(User, user_id)
    if target is None:
        raise ApiError(404, "user not found")
    if target.id == session.user_id:
        raise unprocessable("user_id", "the owner has every right on their own session")
    if project_role(db, target, session.project) is None:
        raise unprocessable("user_id", "%s cannot see this project; add them as a collaborator "
                                       "first" % target.username)
    row = db.get(SessionShare, (session.id, target.id))
    if row is None:
        row = SessionShare(session_id=session.id, user_id=target.id, mode=body.mode)
        db.add(row)
    row.mode = body.mode
    audit.record(db, "session.share", access.user, target="%d/%d" % (session.project_id,
                                                                     session.id),
                 request=request, session_id=session.id, user=target.username, mode=body.mode)
    db.commit()
    db.refresh(row)
    return _share_out(row)


@router.delete(ONE + "/shares/{user_id}", status_code=204)
def unshare(session_id: Id, user_id: Id, request: Request,
            access: Access = require("session.share"), db: Session = Depends(get_db)) -> Response:
    session = access.engine_session
    assert session is not None
    row = db.get(SessionShare, (session.id, user_id))
    if row is None:
        raise ApiError(404, "this session is not shared with user %d" % user_id)
    username = row.user.username
    db.delete(row)
    audit.record(db, "session.unshare", access.user, target="%d/%d" % (session.project_id,
                                                                       session.id),
                 request=request, session_id=session.id, user=username)
    db.commit()
    return Response(status_code=204)
