"""Multipart uploads, parsed only after the caller is allowed and the size is known."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from ..errors import ApiError

MAX_FILES = 1000


async def read_multipart(request: Request, max_bytes: int) -> FormData:
    """Parse a multipart body whose declared length is within max_bytes (plus form overhead).

    Starlette spools each file to a temporary file as it streams in, so memory stays small."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "send the upload as multipart/form-data")
    length = request.headers.get("content-length")
    if length is None:
        raise ApiError(411, "uploads need a Content-Length header")
    try:
        declared = int(length)
    except ValueError:
        raise ApiError(400, "Content-Length is not a number")
    if declared > max_bytes + 1024 * 1024:
        raise ApiError(413, "upload is larger than %d MiB" % (max_bytes // (1024 * 1024)))
    try:
        return await request.form(max_files=MAX_FILES, max_fields=100)
    except Exception as e:  # starlette raises MultiPartException / HTTPException on bad bodies
        raise ApiError(400, "the multipart body could not be read: %s" % getattr(e, "detail", e))


async def save_upload(upload: UploadFile, target: Path, max_bytes: int) -> int:
    """Copy an uploaded file to a new file target (never through a link) in chunks; removes
    target when too large."""
    written = 0
    try:
        fd = os.open(str(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = await upload.read(1024 * 1024)
                if not chunk:
                    break
                written += len(chunk)
                if written > max_bytes:
                    raise ApiError(413, "upload is larger than %d MiB" % (max_bytes // (1024 * 1024)))
                out.write(chunk)
    except BaseException:
        if target.exists():
            os.unlink(target)
        raise
    return written


def is_file(value: Any) -> bool:
    return isinstance(value, UploadFile)
