"""Mount table lookups and commands that cannot hang the caller.

A hung FUSE or NFS mount blocks any process that touches it, in uninterruptible sleep. So the
mount table is read from /proc (which never touches the mount), and anything that does touch it
runs in a child process with a deadline; a child that overstays is killed and reaped in the
background, never waited for.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)
MOUNTINFO = Path("/proc/self/mountinfo")
FUSECTL = Path("/sys/fs/fuse/connections")


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    fstype: str
    source: str
    device: str  # major:minor; for FUSE the minor is the connection number


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mountinfo(text: str) -> List[MountEntry]:
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        entries.append(MountEntry(_unescape(fields[4]), tail[0], _unescape(tail[1]), fields[2]))
    return entries


def mount_entry(path: Path, mountinfo: Optional[str] = None) -> Optional[MountEntry]:
    """The mount on exactly this path (the topmost one), without touching the file system."""
    text = MOUNTINFO.read_text() if mountinfo is None else mountinfo
    target = os.path.normpath(os.path.abspath(str(path)))
    found = None
    for entry in parse_mountinfo(text):
        if entry.mount_point == target:
            found = entry  # later lines are mounted on top
    return found


def run_bounded(argv: Sequence[str], timeout: float,
                env: Optional[dict] = None) -> Tuple[Optional[int], str]:
    """(exit code, output) of a command, or (None, why) when it outlived timeout or can't start."""
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    except OSError as e:
        return None, "cannot run %s: %s" % (argv[0], e.strerror or e)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # a process stuck on a dead mount may take a while to die: reap it later
        threading.Thread(target=proc.wait, name="reap-%d" % proc.pid, daemon=True).start()
        return None, "%s did not finish within %.0fs" % (argv[0], timeout)
    return proc.returncode, out.decode("utf-8", "replace").strip()


def one_line(text: str) -> str:
    """The last non-empty line: tools print the actual error last (ssh warns first)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def responsive(path: Path, timeout: float) -> Tuple[bool, str]:
    """Whether path is a mount point whose server answers within timeout (in child processes).
    `stat -f` (statfs) is never answered from the kernel's cache: it reaches the server."""
    code, out = run_bounded(["mountpoint", "-q", str(path)], timeout)
    if code == 0:
        code, out = run_bounded(["stat", "-f", "-c", "%b", str(path)], timeout)
        if code == 0:
            return True, ""
    if code is None:
        return False, out
    # mountpoint -q is silent; stat says why (e.g. "Transport endpoint is not connected")
    if not out:
        code, out = run_bounded(["stat", "-c", "%i", str(path)], timeout)
    return False, one_line(out) or "not a mount point"


def fusermount() -> Optional[str]:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def abort_fuse(entry: MountEntry) -> None:
    """Abort a FUSE connection (fusectl), so a hung server cannot keep callers blocked."""
    minor = entry.device.partition(":")[2]
    abort = FUSECTL / minor / "abort"
    if entry.fstype.startswith("fuse") and minor.isdigit() and abort.exists():
        try:
            abort.write_text("1")
        except OSError as e:
            log.debug("cannot abort FUSE connection %s: %s", minor, e)


def detach(path: Path, timeout: float = 10.0) -> Optional[str]:
    """Lazily unmount whatever is mounted on path; None on success (or nothing mounted)."""
    entry = mount_entry(path)
    if entry is None:
        return None
    if entry.fstype.startswith("fuse"):
        abort_fuse(entry)
        tool = fusermount()
        argv = [tool, "-u", "-z", str(path)] if tool else ["umount", "-l", str(path)]
    else:
        argv = ["umount", "-l", str(path)]
    code, out = run_bounded(argv, timeout)
    if code == 0 or mount_entry(path) is None:
        return None
    return "cannot unmount %s: %s" % (path, one_line(out) or "exit %s" % code)
