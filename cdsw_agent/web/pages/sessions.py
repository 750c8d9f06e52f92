"""Workbench pages: a project's sessions (list and start form) and one session's workbench,
the file editor beside its console and terminal; a stopped session keeps its console log."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import List, Optional, Tuple

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from ...projects.storage import FileError, ProjectFiles
from ...server.deps import get_db, get_state
from ...server.errors import ApiError
from ...server.permissions import Access, require
from ...server.routes.admin import list_images, list_profiles
from ...server.routes.files import files_of
from ...server.routes.projects import list_collaborators
from ...server.routes.sessions import get_session, list_sessions, list_shares
from ...server.schemas import Id
from ...server.state import ServerState
from ...sessions.launch import APP_PORT
from .. import assets
from ..render import CSP_INLINE_STYLES, page
from .common import page_router, project_context

router = page_router()
KERNELS = (("python3", "Python 3"), ("r", "R"), ("scala", "Scala"))
# what the editor opens when the URL names no file: the first of these the project has
DEFAULT_FILES = ("analysis.py", "main.py", "README.md")


@router.get("/projects/{project_id}/sessions")
def sessions_page(request: Request, project_id: Id, access: Access = require("project.read"),
                  db: Session = Depends(get_db)) -> Response:
    ctx = project_context(request, access, db, "sessions")
    sessions = list_sessions(project_id=project_id, active=False, access=access, db=db)
    return page(request, "sessions.html", title="Workbench · " + ctx["project"].name,
                access=access, db=db, sessions=list(reversed(sessions)), kernels=KERNELS,
                images=list_images(access=access, db=db),
                profiles=list_profiles(access=access, db=db), **ctx)


def _open_file(files: ProjectFiles, wanted: str) -> Tuple[str, str, Optional[float], str]:
    """(path, content, modified, problem) of the file the editor starts with."""
    candidates = [wanted] if wanted else list(DEFAULT_FILES)
    for path in candidates:
        try:
            if wanted or files.exists(path):
                content, entry = files.read_text_entry(path)
                return path, content, entry.modified, ""
        except FileError as e:
            if wanted:
                return path, "", None, str(e)
    return "", "", None, ("no file %s in this project" % wanted) if wanted else ""


@router.get("/projects/{project_id}/sessions/{session_id}")
def session_page(request: Request, project_id: Id, session_id: Id,
                 file: str = Query(default="", max_length=4096),
                 access: Access = require("session.view"), db: Session = Depends(get_db),
                 state: ServerState = Depends(get_state)) -> Response:
    if access.engine_session is None or access.engine_session.project_id != project_id:
        raise ApiError(404, "session not found")
    session = get_session(session_id=session_id, access=access, db=db, state=state)
    ctx = project_context(request, access, db, "sessions")
    files = files_of(state, access)
    path, content, modified, problem = _open_file(files, file.strip("/"))
    try:
        tree = files.list("")
    except FileError as e:
        tree, problem = [], problem or str(e)
    owner = session.your_access == "owner"
    shares: List[object] = list_shares(session_id=session_id, access=access, db=db) if owner else []
    people = [c for c in list_collaborators(project_id=project_id, access=access)
              if c.username != session.owner] if owner else []
    mode_script, mode = assets.editor_mode(path) if path else ("", "")
    modes = [m for m in assets.WORKBENCH_MODES
             if (assets.VENDOR_DIR / "codemirror/mode" / m / (m + ".js")).is_file()]
    return page(request, "session.html", title="Session %d · %s" % (session.id, ctx["project"].name),
                access=access, db=db, csp=CSP_INLINE_STYLES, main_class="workbench",
                session=session, owner=owner, interactive=session.your_access in ("owner", "interactive"),
                shares=shares, people=people, file_path=path, content=content, modified=modified,
                problem=problem, entries=tree, current_path=path, mode=mode,
                modes=modes, editor_modes_json=json.dumps(
                    {ext: spec for ext, (script, spec) in assets.EDITOR_MODES.items()
                     if script in modes}),
                filename=PurePosixPath(path).name if path else "", app_port=APP_PORT,
                editor_missing=bool(assets.missing_vendor_files()), **ctx)
