"""What the engine's `cdsw` library recorded for a run, as the master reads it.

The records file and the run's files are written by the user's script, so the master reads them
defensively: bounded sizes, malformed lines skipped, no symlink followed (a link planted in the
run's folder must not make the master read its own files), only regular files copied.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Tuple

import cdsw

from ..projects import safe_fs

MAX_RECORDS_BYTES = 16 * 1024**2
MAX_METRICS = 1000
MAX_HISTORY = 1000  # values kept per metric
MAX_FILES = 200
CHUNK = 1 << 20


@dataclass
class Tracked:
    metrics: Dict[str, Any] = field(default_factory=dict)  # name -> last value
    history: Dict[str, List[Any]] = field(default_factory=dict)  # name -> values, oldest first
    files: List[str] = field(default_factory=list)  # project-relative, in tracking order
    notes: List[str] = field(default_factory=list)  # what was ignored, for the run's log


def _open_regular(path: Path) -> Optional[int]:
    """A read descriptor of path when it is a regular file (not through a symlink), else None."""
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _valid_value(value: Any) -> bool:
    if isinstance(value, bool) or isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= cdsw.MAX_STRING_LENGTH


def _valid_file(rel: Any) -> bool:
    if not isinstance(rel, str) or not rel or len(rel) > 4096 or "\x00" in rel:
        return False
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in rel


def read(records: Path) -> Tracked:
    """The metrics and tracked files in a records file (empty when there is none)."""
    out = Tracked()
    fd = _open_regular(records)
    if fd is None:
        return out
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_RECORDS_BYTES + 1)
    if len(data) > MAX_RECORDS_BYTES:
        data = data[:MAX_RECORDS_BYTES].rsplit(b"\n", 1)[0]
        out.notes.append("tracking: only the first %d MiB of records were read"
                         % (MAX_RECORDS_BYTES // 1024**2))
    bad = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except ValueError:
            bad += 1
            continue
        if not isinstance(record, dict):
            bad += 1
        elif "metric" in record:
            name, value = record.get("metric"), record.get("value")
            if not isinstance(name, str) or not name or len(name) > cdsw.MAX_NAME_LENGTH \
                    or not _valid_value(value):
                bad += 1
            elif name not in out.metrics and len(out.metrics) >= MAX_METRICS:
                bad += 1
            else:
                out.metrics[name] = value
                history = out.history.setdefault(name, [])
                if len(history) < MAX_HISTORY:
                    history.append(value)
        elif "file" in record and _valid_file(record["file"]):
            rel = str(PurePosixPath(record["file"]))
            if rel not in out.files:
                if len(out.files) < MAX_FILES:
                    out.files.append(rel)
                else:
                    bad += 1
        else:
            bad += 1
    if bad:
        out.notes.append("tracking: %d malformed or excess record%s ignored"
                         % (bad, "" if bad == 1 else "s"))
    return out


def _open_inside(root: Path, rel: str) -> Optional[int]:
    """Opens root/rel for reading, refusing symlinks at every level and non-regular files."""
    try:
        root_fd = os.open(str(root), safe_fs.DIR_FLAGS)
    except OSError:
        return None
    try:
        fd = safe_fs.open_beneath(root_fd, PurePosixPath(rel).parts, safe_fs.READ_FLAGS)
    except OSError:
        return None
    finally:
        os.close(root_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def collect_files(files_dir: Path, artifacts_dir: Path, paths: List[str],
                  max_bytes: int) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Copies the tracked files out of the run's files into artifacts_dir. Returns the kept
    files ({"path", "size"}) and one note per file that could not be kept."""
    kept: List[Dict[str, Any]] = []
    notes: List[str] = []
    for rel in paths:
        fd = _open_inside(files_dir, rel)
        if fd is None:
            notes.append("tracked file %s: not kept, it is no longer a regular file of the "
                         "project (removed, or a symlink)" % rel)
            continue
        with os.fdopen(fd, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            if size > max_bytes:
                notes.append("tracked file %s: not kept, it grew to %d bytes; the limit is %d"
                             % (rel, size, max_bytes))
                continue
            dest = artifacts_dir.joinpath(*PurePosixPath(rel).parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name("." + dest.name + ".partial")
            copied = 0
            with open(tmp, "wb") as out:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    copied += len(chunk)
                    if copied > max_bytes:
                        break
                    out.write(chunk)
            if copied > max_bytes:
                tmp.unlink()
                notes.append("tracked file %s: not kept, it is larger than %d bytes"
                             % (rel, max_bytes))
                continue
            os.replace(tmp, dest)
            kept.append({"path": rel, "size": copied})
    return kept, notes


def artifact(artifacts_dir: Path, rel: str) -> Optional[Path]:
    """The kept copy of a tracked file, or None when rel names none."""
    if not _valid_file(rel):
        return None
    path = artifacts_dir.joinpath(*PurePosixPath(rel).parts)
    return path if path.is_file() and not path.is_symlink() else None
