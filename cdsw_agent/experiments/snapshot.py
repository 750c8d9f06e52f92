"""The copy of a project's files an experiment run works on, taken when the run is launched.

Everything in the project folder is copied (hidden files and .git included), symlinks as
symlinks (never followed: a link out of the project stays a link), through directory
descriptors (safe_fs), so a folder swapped for a link while the copy runs is not entered.
Only what cannot be copied as data is skipped, and listed in the run's log: sockets, FIFOs
and device nodes. The copy is made in a temporary folder next to the destination and renamed
into place, so a snapshot that failed (too large, disk full, unreadable file) leaves nothing
behind and a found snapshot is complete.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..projects import safe_fs
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


def _measure(src_fd: int) -> Snapshot:
    """Files and bytes a copy of the open folder takes, and what it would skip."""
    out = Snapshot()
    for parts, st, _ in safe_fs.scan(src_fd):
        if stat.S_ISREG(st.st_mode):
            out.files += 1
            out.bytes += st.st_size
        elif not (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            out.skipped.append("/".join(parts))
    out.skipped.sort()
    return out


def take(project_dir: Path, dest: Path, max_bytes: int = DEFAULT_MAX_BYTES,
         owner: Optional[int] = None) -> Snapshot:
    """Copies project_dir to dest (which must not exist); SnapshotError when it cannot.
    `owner`: the uid the copy is given to (engines run as that uid and write there)."""
    try:
        src_fd = os.open(str(project_dir), safe_fs.DIR_FLAGS)
    except OSError:
        raise SnapshotError("the project folder %s is missing" % project_dir)
    try:
        return _take(src_fd, dest, max_bytes, owner)
    finally:
        os.close(src_fd)


def _take(src_fd: int, dest: Path, max_bytes: int, owner: Optional[int]) -> Snapshot:
    try:
        info = _measure(src_fd)
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
        os.mkdir(tmp, 0o700)
        out = os.open(str(tmp), safe_fs.DIR_FLAGS)
        try:  # through descriptors: a folder swapped for a link meanwhile is not followed
            safe_fs.copy_tree(src_fd, out, budget=[max_bytes])
            st = os.fstat(src_fd)
            os.chmod(out, stat.S_IMODE(st.st_mode))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
        chown_tree(tmp, owner)
        os.rename(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.EFBIG:
            raise SnapshotError("the project grew beyond the %s an experiment snapshot may hold "
                                "while it was copied" % human(max_bytes))
        if e.errno == errno.ENOSPC:
            raise SnapshotError("the disk filled up while copying the project (%s) into %s; "
                                "free some space and start the run again"
                                % (human(info.bytes), dest.parent))
        raise SnapshotError("cannot snapshot the project: %s" % _why(e))
    return info


def _why(e: OSError) -> str:
    where = " (%s)" % e.filename if getattr(e, "filename", None) else ""
    return "%s%s" % (e.strerror or e, where)
