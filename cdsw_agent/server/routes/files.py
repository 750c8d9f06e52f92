"""Project files: list, read, write, upload, download, mkdir, move, delete."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, Callable, Iterator, List, Optional
from urllib.parse import quote

from fastapi import Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from sqlalchemy.orm import Session

from ...jobs import identity
from ...jobs import script as job_script
from ...projects.storage import CHUNK, Entry, FileError, ProjectFiles, clean_relative, engine_owner
from .. import script_approvals
from ..deps import get_db, get_state
from ..errors import ApiError
from ..permissions import Access, api_router, require
from ..schemas import Id, Strict
from ..state import ServerState
from .projects import project_dir
from .uploads import is_file, read_multipart

router = api_router(prefix="/projects/{project_id}/files", tags=["files"])
PathQuery = Query(default="", max_length=4096, description="path relative to the project root")


class EntryOut(BaseModel):
    name: str
    path: str
    type: str
    size: int
    modified: float


class Listing(BaseModel):
    path: str
    entries: List[EntryOut]


class FileContent(BaseModel):
    path: str
    content: str
    size: int
    modified: float


class FileWrite(Strict):
    path: str = Field(min_length=1, max_length=4096)
    content: str = Field(max_length=10 * 1024 * 1024)
    expected_modified: Optional[float] = Field(
        default=None, description="modification time the client read; 409 if the file changed since")


class PathBody(Strict):
    path: str = Field(min_length=1, max_length=4096)


class MoveBody(Strict):
    source: str = Field(min_length=1, max_length=4096)
    destination: str = Field(min_length=1, max_length=4096)


class Uploaded(BaseModel):
    files: List[EntryOut]


def files_of(state: ServerState, access: Access) -> ProjectFiles:
    assert access.project is not None
    root = project_dir(state, access.project.id)
    if not root.is_dir():
        raise ApiError(409, "the project's files are missing on the master (%s); restore them from "
                       "a backup" % root)
    return ProjectFiles(root, owner=engine_owner())


def _out(entry: Entry) -> EntryOut:
    return EntryOut(**entry.__dict__)


def _fail(e: FileError) -> ApiError:
    return ApiError(e.status, str(e))


@router.get("", response_model=Listing)
def list_files(project_id: Id, path: str = PathQuery, access: Access = require("project.files.read"),
               state: ServerState = Depends(get_state)) -> Listing:
    files = files_of(state, access)
    try:
        entries = files.list(path)
        return Listing(path=str(clean_relative(path)) if clean_relative(path).parts else "",
                       entries=[_out(e) for e in entries])
    except FileError as e:
        raise _fail(e)


@router.get("/content", response_model=FileContent)
def read_file(project_id: Id, path: str = PathQuery, access: Access = require("project.files.read"),
              state: ServerState = Depends(get_state)) -> FileContent:
    files = files_of(state, access)
    try:
        text, entry = files.read_text_entry(path)
    except FileError as e:
        raise _fail(e)
    return FileContent(path=entry.path, content=text, size=entry.size, modified=entry.modified)


@router.put("/content", response_model=EntryOut)
def write_file(project_id: Id, body: FileWrite, request: Request,
               access: Access = require("project.files.write"),
               state: ServerState = Depends(get_state), db: Session = Depends(get_db)) -> EntryOut:
    files = files_of(state, access)
    try:
        if body.expected_modified is not None and files.exists(body.path):
            if abs(files.entry(body.path).modified - body.expected_modified) > 1e-6:
                raise ApiError(409, "%s changed since you opened it; reload it before saving"
                               % body.path)
        data = body.content.encode("utf-8")
        entry = _write_approving(db, request, access, files, body.path, iter([data]), None,
                                 lambda: job_script.digest(data), "file editor")
    except FileError as e:
        raise _fail(e)
    return _out(entry)


def _write_approving(db: Session, request: Request, access: Access, files: ProjectFiles,
                     rel: str, chunks: Iterator[bytes], max_bytes: Optional[int],
                     digest: Callable[[], str], via: str) -> Entry:
    """Writes a file for the caller; when it is the script of a job that runs as them, their
    save approves the version they wrote (jobs/identity.editor_approvals), committed with the
    write or not at all."""
    assert access.project is not None
    path = str(clean_relative(rel))
    try:
        approved = identity.editor_approvals(
            db, access.project.id, path, access.user.id,
            lambda: job_script.current_digest(files.root, path), digest)
        entry = files.write_stream(rel, chunks, max_bytes=max_bytes)
    except BaseException:
        db.rollback()
        raise
    script_approvals.record(db, approved, access.user, access.project.id, path, request, via)
    db.commit()
    return entry


UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


def _upload_digest(f: BinaryIO) -> str:
    """The uploaded file's digest, read from its spool, which is left at its start."""
    f.seek(0)
    h = hashlib.sha256()
    for block in iter(lambda: f.read(CHUNK), b""):
        h.update(block)
    f.seek(0)
    return h.hexdigest()


@router.post("/upload", response_model=Uploaded, status_code=201, openapi_extra=UPLOAD_DOC)
async def upload_files(project_id: Id, request: Request, path: str = PathQuery,
                       access: Access = require("project.files.write"),
                       state: ServerState = Depends(get_state),
                       db: Session = Depends(get_db)) -> Uploaded:
    """Upload one or more files (multipart field `files`) into the folder `path`."""
    files = files_of(state, access)
    max_bytes = state.settings.max_upload_mb * 1024 * 1024
    try:
        files.require_folder(path)
    except FileError as e:
        raise _fail(e)
    form = await read_multipart(request, max_bytes)
    try:
        uploads = [v for k, v in form.multi_items() if k == "files" and is_file(v)]
        if not uploads:
            raise ApiError(422, "files: attach at least one file in the field 'files'",
                           [{"field": "files", "message": "missing"}])
        written = []
        for up in uploads:
            name = os.path.basename((up.filename or "").replace("\\", "/"))
            if not name or name in (".", ".."):
                raise ApiError(422, "files: every file needs a name", [{"field": "files",
                                                                        "message": "no file name"}])
            rel = str(clean_relative(path) / name)

            def chunks(u=up):  # type: ignore[no-untyped-def]
                while True:
                    data = u.file.read(1024 * 1024)
                    if not data:
                        return
                    yield data
            try:
                written.append(_out(await run_in_threadpool(
                    _write_approving, db, request, access, files, rel, chunks(), max_bytes,
                    lambda u=up: _upload_digest(u.file), "upload")))
            except FileError as e:
                raise _fail(e)
        return Uploaded(files=written)
    finally:
        await form.close()


@router.get("/download")
def download(project_id: Id, path: str = PathQuery, access: Access = require("project.files.read"),
             state: ServerState = Depends(get_state)) -> Response:
    """A file as it is, or a folder as a .tar.gz archive."""
    files = files_of(state, access)
    try:
        got = files.download(path)  # opened once; streamed from that descriptor, never reopened
    except FileError as e:
        raise _fail(e)

    def stream() -> Iterator[bytes]:
        with got.stream:
            while True:
                chunk = got.stream.read(CHUNK)
                if not chunk:
                    return
                yield chunk
    headers = {"Content-Disposition": _attachment(
        (got.name or access.project.slug) + (".tar.gz" if got.archive else ""))}
    if got.size is not None:
        headers["Content-Length"] = str(got.size)
    return StreamingResponse(stream(), headers=headers, media_type=(
        "application/gzip" if got.archive else "application/octet-stream"))


def _attachment(name: str) -> str:
    quoted = quote(name)
    if quoted != name:  # RFC 6266/5987, as starlette's FileResponse does
        return "attachment; filename*=utf-8''%s" % quoted
    return 'attachment; filename="%s"' % name.replace('"', "")


@router.post("/mkdir", response_model=EntryOut, status_code=201)
def make_dir(project_id: Id, body: PathBody, access: Access = require("project.files.write"),
             state: ServerState = Depends(get_state)) -> EntryOut:
    files = files_of(state, access)
    try:
        return _out(files.mkdir(body.path))
    except FileError as e:
        raise _fail(e)


@router.post("/move", response_model=EntryOut)
def move(project_id: Id, body: MoveBody, access: Access = require("project.files.write"),
         state: ServerState = Depends(get_state)) -> EntryOut:
    files = files_of(state, access)
    try:
        return _out(files.move(body.source, body.destination))
    except FileError as e:
        raise _fail(e)


@router.delete("", status_code=204)
def delete(project_id: Id, path: str = Query(min_length=1, max_length=4096),
           access: Access = require("project.files.write"),
           state: ServerState = Depends(get_state)) -> Response:
    files = files_of(state, access)
    try:
        files.delete(path)
    except FileError as e:
        raise _fail(e)
    return Response(status_code=204)
