"""A job's person saving its script approves their own version (jobs/identity.editor_approvals),
whether they save it with the workbench's file tools (routes/files.py) or in JupyterLab.

A JupyterLab save is `PUT .../sessions/ID/engine/api/contents/PATH` through the master's
session proxy (routes/engine.py), made by the signed-in person (the session's owner, or someone
it is shared with interactively), so the master knows who saved which bytes over which version:
before passing the save on it reads the script's digest, and once the engine answered that it
wrote the file, it approves the digest of the bytes the save carried (what jupyter_server's
contents manager writes for a whole text or base64 file). Only when a job runs that file as
that person is the save's body read here; every other call streams through untouched.

Not approved this way: a notebook, an upload in chunks, and anything written in a session by
other means (a terminal, code, git), whose author the master cannot know; the job's page
approves those.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import List, Optional

from sqlalchemy.orm import Session
from starlette.requests import Request

from ..jobs import identity
from ..jobs import script as job_script
from ..projects.storage import FileError, clean_relative
from ..store.jobs_models import Job
from ..store.models import User
from . import audit
from .permissions import Access
from .routes.projects import project_dir
from .state import ServerState

CONTENTS = "api/contents/"  # jupyter_server's Contents API, under the engine's base path
MAX_BODY = 16 << 20  # larger saves are passed on unread and approve nothing


def record(db: Session, approved: List[Job], user: User, project_id: int, script: str,
           request: Optional[Request], via: str) -> None:
    """Audits each approval (`job.script.approve`) in the caller's transaction."""
    for job in approved:
        audit.record(db, "job.script.approve", user, target="%d/%s" % (project_id, job.name),
                     request=request, job_id=job.id, script=script, via=via)


@dataclass(frozen=True)
class Watched:
    """A JupyterLab save of a job's script by the job's person, before it is passed on."""
    script: str
    before: str  # the script's digest just before ("" when it could not be read)


def saved_script(method: str, path: str) -> Optional[str]:
    """The project-relative path a proxied call saves, or None when it is no Contents save."""
    if method != "PUT" or not path.startswith(CONTENTS):
        return None
    try:
        return str(clean_relative(path[len(CONTENTS):]))
    except FileError:
        return None


def watch(state: ServerState, access: Access, script: str) -> Optional[Watched]:
    """Whether this save may approve a job's script: a job of the session's project runs it as
    the caller (then the file's digest now), else None."""
    assert access.project is not None
    with state.db.session() as db:
        if not identity.pinned_as(db, access.project.id, script, access.user.id):
            return None
    return Watched(script, job_script.current_digest(project_dir(state, access.project.id),
                                                     script))


def saved_bytes(body: bytes) -> Optional[bytes]:
    """The bytes a Contents save writes for a whole file, as jupyter_server's `_save_file` does
    (text as UTF-8, base64 decoded), or None for anything else: a notebook, a directory, one
    chunk of an upload, a body the engine would refuse."""
    try:
        model = json.loads(body)
    except ValueError:
        return None
    if not isinstance(model, dict) or model.get("type") != "file" or "chunk" in model:
        return None
    content, fmt = model.get("content"), model.get("format")
    if not isinstance(content, str):
        return None
    try:
        if fmt == "text":
            return content.encode("utf-8")
        if fmt == "base64":
            return base64.decodebytes(content.encode("ascii"))
    except (UnicodeError, binascii.Error):
        return None
    return None


def approve_save(state: ServerState, access: Access, request: Request, watched: Watched,
                 data: bytes) -> List[Job]:
    """After the engine wrote the file: the jobs that run it as the caller and approved the
    version it replaced approve the saved one, audited `via` JupyterLab."""
    assert access.project is not None
    pid = access.project.id
    with state.db.session() as db:
        approved = identity.editor_approvals(db, pid, watched.script, access.user.id,
                                             lambda: watched.before,
                                             lambda: job_script.digest(data))
        record(db, approved, access.user, pid, watched.script, request, "JupyterLab")
    return approved
