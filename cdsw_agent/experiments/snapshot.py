"""The copy of a project's files an experiment run works on, taken when the run is launched.

Everything in the project folder is copied (hidden files and .git included), symlinks as
symlinks (never followed: a link out of the project stays a link). Only what cannot be copied
as data is skipped, and listed in the run's log: sockets, FIFOs and device nodes. The copy is
made in a temporary folder next to the destination and renamed into place, so a snapshot that
failed (too large, disk full, unreadable file) leaves nothing behind and a found snapshot is
complete.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..projects.storage import chown_tree

DEFAULT_MAX_BYTES = 2 * 1024**3
HEADROOM_BYTES = 64 * 1024**2  # left free on the disk after the copy
MAX_SKIPPED_LISTED = 50


class SnapshotError(Exception):
    """The snapshot cannot be taken; str() is one line for the run's reason."""


@dataclass
class Snapshot:
    files: int = 0
    bytes: int = 0
    skipped: List[str] = field(default_factory=list)  # project-relative paths, not copied

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def describe(self) -> List[str]:
        """Lines for the run's log."""
        lines = ["snapshot of the project: %d files, %s" % (self.files, human(self.bytes))]
        if self.skipped:
            shown = ", ".join(self.skipped[:MAX_SKIPPED_LISTED])
            more = len(self.skipped) - MAX_SKIPPED_LISTED
            lines.append("not in the snapshot (sockets, FIFOs, devices): %s%s"
                         % (shown, " and %d more" % more if more > 0 else ""))
        return lines


def human(n: int) -> str:
    if n < 1024:
        return "%d bytes" % n
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            break
    return "%.1f %s" % (value, unit)


def _measure(src: Path) -> Snapshot:
    """Files and bytes a copy of src takes, and what it would skip."""
    out = Snapshot()
    for dirpath, dirnames, filenames in os.walk(src, onerror=_raise):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                out.files += 1
                out.bytes += st.st_size
            elif not (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                out.skipped.append(os.path.relpath(path, src))
    out.skipped.sort()
    return out


def _raise(e: OSError) -> None:
    raise e


def _copy_tree(src: Path, dest: Path) -> None:
    os.mkdir(dest)
    shutil.copystat(src, dest)
    with os.scandir(src) as entries:
        for entry in entries:
            target = dest / entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(entry.path), target)
            elif stat.S_ISDIR(st.st_mode):
                _copy_tree(Path(entry.path), target)
            elif stat.S_ISREG(st.st_mode):
                shutil.copy2(entry.path, target, follow_symlinks=False)


def take(project_dir: Path, dest: Path, max_bytes: int = DEFAULT_MAX_BYTES,
         owner: Optional[int] = None) -> Snapshot:
    """Copies project_dir to dest (which must not exist); SnapshotError when it cannot.
    `owner`: the uid the copy is given to (engines run as that uid and write there)."""
    if not project_dir.is_dir():
        raise SnapshotError("the project folder %s is missing" % project_dir)
    try:
        info = _measure(project_dir)
    except OSError as e:
        raise SnapshotError("cannot read the project to snapshot it: %s" % _why(e))
    if info.bytes > max_bytes:
        raise SnapshotError("the project holds %s, more than the %s an experiment snapshot may "
                            "hold; move large data out of the project (HDFS, object storage)"
                            % (human(info.bytes), human(max_bytes)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    if info.bytes + HEADROOM_BYTES > free:
        raise SnapshotError("not enough disk space for the snapshot: the project holds %s and "
                            "%s are free in %s" % (human(info.bytes), human(free), dest.parent))
    tmp = dest.with_name("." + dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a master that died while copying
    try:
        _copy_tree(project_dir, tmp)
        chown_tree(tmp, owner)
        os.rename(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise SnapshotError("the disk filled up while copying the project (%s) into %s; "
                                "free some space and start the run again"
                                % (human(info.bytes), dest.parent))
        raise SnapshotError("cannot snapshot the project: %s" % _why(e))
    return info


def _why(e: OSError) -> str:
    where = " (%s)" % e.filename if getattr(e, "filename", None) else ""
    return "%s%s" % (e.strerror or e, where)
