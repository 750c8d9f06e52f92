"""Project files: a folder browser (upload, new file or folder, delete) and the code editor."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import List, Tuple
from urllib.parse import quote

from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from ...projects.storage import FileError
from ...server.deps import get_db, get_state
from ...server.errors import ApiError
from ...server.permissions import Access, require
from ...server.routes.files import files_of
from ...server.schemas import Id
from ...server.state import ServerState
from .. import assets
from ..render import page
from .common import page_router, project_context

router = page_router()


def crumbs(path: str) -> List[Tuple[str, str]]:
    """(name, folder path) for each folder on the way to `path`."""
    parts = PurePosixPath(path).parts if path else ()
    return [(p, "/".join(parts[:i + 1])) for i, p in enumerate(parts)]


@router.get("/projects/{project_id}/files")
def files_page(request: Request, project_id: Id, path: str = Query(default="", max_length=4096),
               access: Access = require("project.files.read"), db: Session = Depends(get_db),
               state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "files")
    files = files_of(state, access)
    try:
        entries = files.list(path)
    except FileError as e:
        raise ApiError(e.status, str(e))
    return page(request, "files.html", title="Files · " + ctx["project"].name, access=access,
                db=db, entries=entries, path=path.strip("/"), crumbs=crumbs(path.strip("/")),
                max_upload_mb=state.settings.max_upload_mb, **ctx)


@router.get("/projects/{project_id}/files/{file_path:path}")
def editor_page(request: Request, project_id: Id, file_path: str,
                access: Access = require("project.files.read"), db: Session = Depends(get_db),
                state: ServerState = Depends(get_state)) -> Response:
    ctx = project_context(request, access, db, "files")
    files = files_of(state, access)
    content, modified, problem, is_new = "", None, "", False
    try:
        kind = files.entry(file_path).type if files.exists(file_path) else ""
        if kind == "directory":
            return RedirectResponse("/projects/%d/files?path=%s" % (project_id, quote(file_path)),
                                    status_code=303)
        if kind:
            content, entry = files.read_text_entry(file_path)
            modified = entry.modified
        elif not ctx["allowed"]["write"]:
            raise ApiError(404, "no file %r in this project" % file_path)
        else:
            is_new = True  # saving creates it (e.g. "Create a README")
        tree = files.list("")
    except FileError as e:
        if e.status in (413, 415):  # too large or binary: offer the download instead
            problem, tree = str(e), files.list("")
        else:
            raise ApiError(e.status, str(e))
    mode_script, mode = assets.editor_mode(file_path)
    return page(request, "editor.html", title=PurePosixPath(file_path).name, access=access, db=db,
                main_class="workbench", file_path=file_path, content=content, modified=modified,
                problem=problem, is_new=is_new, entries=tree, current_path=file_path,
                mode=mode, mode_script=mode_script,
                editor_missing=bool(assets.missing_vendor_files()), **ctx)
