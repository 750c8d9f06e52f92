"""Bind-mount host paths into the mount namespace of a running process (a container's init).

A warm engine container is started before anyone claims it, so it cannot have the project folder
and the user's home as ordinary Docker binds; they are "injected" when a user claims it, the way
LXD injects mounts into running containers, with the new mount API (Linux >= 5.12):
open_tree(OPEN_TREE_CLONE) makes a detached copy of the host path's mount tree, mount_setattr
makes it read-only, and move_mount attaches it inside the container. move_mount only attaches to
mounts of the caller's own mount namespace, so the work is done after setns(CLONE_NEWNS), and
the kernel refuses that (EINVAL) in a multi-threaded process: `inject` therefore runs this file
as a script in a fresh, single-threaded interpreter (`python -I -S`: standard library only).

The process is held by a pidfd from the start, so a pid reused by another process is never
entered. setns puts us at the root of the namespace, not at the container's pivoted root, so we
chroot to /proc/PID/root (opened before setns), as `nsenter --root` does. Mounts are attached
one by one; when one fails, those before it stay attached (the caller removes the container).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, List, Sequence

# syscall numbers: x86_64, else the generic table (aarch64)
_X86 = platform.machine() in ("x86_64", "amd64")
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_PIDFD_OPEN, SYS_MOUNT_SETATTR = 428, 429, 434, 442
SYS_SETNS = 308 if _X86 else 268
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40
MOUNT_ATTR_RDONLY = 0x1
CLONE_NEWNS = 0x00020000


# exit statuses of the helper: one of the mounts was refused (its path, its source), or this
# host cannot mount into a running container at all (HOST_CANNOT: not root, no mount API)
REFUSED, HOST_CANNOT = 1, 3
HOST_CANNOT_ERRNOS = frozenset((errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP))


class MountInjectError(Exception):
    """One line: what failed and why (strerror). `host_cannot`: this host cannot mount into
    containers at all, whatever the mount."""

    def __init__(self, message: str, host_cannot: bool = False):
        super().__init__(message)
        self.host_cannot = host_cannot


@dataclass(frozen=True)
class InjectMount:
    source: str  # host path
    target: str  # path inside the process's root
    read_only: bool = False


class _MountAttr(ctypes.Structure):  # struct mount_attr (MOUNT_ATTR_SIZE_VER0)
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def inject(pid: int, mounts: Sequence[Any], timeout: float = 10.0) -> None:
    """Attach each mount (anything with .source, .target, .read_only) inside process pid."""
    if not mounts:
        return
    request = {"pid": int(pid), "mounts": [{"source": m.source, "target": m.target,
                                            "read_only": bool(m.read_only)} for m in mounts]}
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", os.path.abspath(__file__)],
                              input=json.dumps(request), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:  # run() has killed the child
        raise MountInjectError("mounting into process %d timed out after %gs"
                               % (pid, timeout)) from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise MountInjectError(lines[-1] if lines else "mounting into process %d failed: exit "
                               "status %d" % (pid, proc.returncode),
                               host_cannot=proc.returncode == HOST_CANNOT)


def _syscall(nr: int, *args: Any) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    conv = [ctypes.c_char_p(a) if isinstance(a, bytes) else
            ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ret = int(libc.syscall(ctypes.c_long(nr), *conv))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _components(target: str) -> List[str]:
    parts = [p for p in target.split("/") if p not in ("", ".")]
    if not target.startswith("/") or ".." in parts or not parts:
        raise ValueError("target must be an absolute path below / without '..'")
    return parts


def _open_target(parts: List[str], is_dir: bool) -> int:
    """O_PATH fd of the target inside the (chrooted) root, created if missing. Walked one
    component at a time without following symlinks: the container's owner could plant a symlink
    (say /home/user -> /etc) to redirect the mount; mounting on the fd leaves no race."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    for i, name in enumerate(parts):
        try:
            if i < len(parts) - 1 or is_dir:
                os.mkdir(name, 0o755, dir_fd=fd)
            else:  # a file is mounted onto a file
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o644, dir_fd=fd))
        except FileExistsError:
            pass
        nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        os.close(fd)
        fd = nfd
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise ValueError("/%s is a symbolic link in the container, refused"
                             % "/".join(parts[:i + 1]))
    return fd


def _main() -> int:
    request = json.load(sys.stdin)
    pid, mounts = int(request["pid"]), request["mounts"]
    what = "cannot open process %d" % pid
    os.umask(0o022)  # created targets: directories 0755, files 0644, whatever the caller's umask
    try:
        pidfd = _syscall(SYS_PIDFD_OPEN, pid, 0)  # pins the process: no pid reuse from here on
        trees = []
        for m in mounts:  # in the host's namespace: the sources are host paths
            what = "cannot mount %s at %s in process %d" % (m["source"], m["target"], pid)
            if not m["source"].startswith("/"):
                raise ValueError("source must be an absolute path")
            parts = _components(m["target"])
            fd = _syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(m["source"]),
                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
            if m["read_only"]:
                attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
                _syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE,
                         ctypes.byref(attr), ctypes.sizeof(attr))
            trees.append((m, fd, parts, stat.S_ISDIR(os.fstat(fd).st_mode)))
        what = "cannot enter process %d" % pid
        rootfd = os.open("/proc/%d/root" % pid, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        signal.pidfd_send_signal(pidfd, 0)  # still alive: /proc/PID was not a reused pid
        _syscall(SYS_SETNS, pidfd, CLONE_NEWNS)
        os.fchdir(rootfd)
        os.chroot(".")
        for m, fd, parts, is_dir in trees:
            what = "cannot mount %s at %s in process %d" % (m["source"], m["target"], pid)
            tfd = _open_target(parts, is_dir)
            _syscall(SYS_MOVE_MOUNT, fd, b"", tfd, b"",
                     MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
        what = "process %d ended while mounting" % pid
        signal.pidfd_send_signal(pidfd, 0)
    except OSError as e:
        print("%s: %s" % (what, e.strerror or e), file=sys.stderr)
        return HOST_CANNOT if e.errno in HOST_CANNOT_ERRNOS else REFUSED
    except ValueError as e:
        print("%s: %s" % (what, e), file=sys.stderr)
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(_main())
