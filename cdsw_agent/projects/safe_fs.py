"""Opening paths beneath a directory without following a symbolic link at any level.

Project folders are written by engine code, which can swap any file or folder for a symlink at
any moment. Checking a path and then using it by name (realpath, then open) races with that
swap, so every operation here works from an open directory descriptor and on descriptors only:

- `open_beneath(root_fd, parts, flags)` resolves a relative path in one `openat2` call with
  RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS where the kernel has it (Linux 5.6+), else walks it one
  component at a time with `O_NOFOLLOW|O_DIRECTORY` opens relative to the previous descriptor;
- the caller then acts through `*at` calls on that descriptor (os.open/mkdir/rename/unlink with
  dir_fd=...), never by path again.

A symlink anywhere in the path fails with `Unsafe` (kind "symlink"); the kernel does the check
at the moment of use, so a swap between a check and the use cannot redirect it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Callable, Iterator, Optional, Sequence, Tuple

# openat2(2): struct open_how and the RESOLVE_* flags (include/uapi/linux/openat2.h)
SYS_OPENAT2 = 437  # the same number on every architecture (unified syscall table)
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: FIFOs


class Unsafe(OSError):
    """The path cannot be used as asked. kind: symlink | missing | notdir | invalid."""

    def __init__(self, kind: str, where: str, err: int = 0):
        super().__init__(err, "%s: %s" % (kind, where))
        self.kind, self.where = kind, where


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


try:
    _libc: Optional[ctypes.CDLL] = ctypes.CDLL(None, use_errno=True)
    _libc.syscall.restype = ctypes.c_long
except (OSError, AttributeError):  # not glibc/musl: the descriptor walk does the work
    _libc = None

# None: not probed yet; tests set False to exercise the walk on kernels that have openat2
OPENAT2: Optional[bool] = None if _libc is not None and hasattr(os, "O_PATH") else False


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    """fd, or raises OSError; NotImplementedError when the kernel lacks openat2."""
    assert _libc is not None
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
    for _ in range(100):
        fd = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dir_fd),
                           ctypes.c_char_p(os.fsencode(path)), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        if err in (errno.ENOSYS, errno.EPERM) and OPENAT2 is None:
            # EPERM: a seccomp filter (some container runtimes) refuses unknown syscalls
            raise NotImplementedError
        if err == errno.EAGAIN:  # a concurrent rename: the kernel asks to retry
            continue
        raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, "the path kept changing while it was opened", path)


def check_parts(parts: Sequence[str]) -> Tuple[str, ...]:
    """The components of a relative path; Unsafe("invalid") for '', '.', '..', '/', NUL."""
    for p in parts:
        if not p or p in (".", "..") or "/" in p or "\x00" in p:
            raise Unsafe("invalid", "/".join(parts), errno.EINVAL)
    return tuple(parts)


def open_beneath(root_fd: int, parts: Sequence[str], flags: int = READ_FLAGS,
                 mode: int = 0o600) -> int:
    """Opens root/parts with flags, refusing symlinks at every level (the last included).
    Empty parts open the root itself again. Raises Unsafe (explained) or OSError."""
    global OPENAT2
    parts = check_parts(parts)
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    if not parts:
        return os.open(".", flags & ~(os.O_CREAT | os.O_EXCL), dir_fd=root_fd)
    if OPENAT2 is not False:
        try:
            fd = _openat2(root_fd, "/".join(parts), flags, mode)
            OPENAT2 = True
            return fd
        except NotImplementedError:
            OPENAT2 = False
        except OSError as e:
            raise _explain(root_fd, parts, e)
    dir_fd = open_dir(root_fd, parts[:-1])
    try:
        return os.open(parts[-1], flags, mode, dir_fd=dir_fd)
    except OSError as e:
        raise _explain(root_fd, parts, e)
    finally:
        os.close(dir_fd)


def open_dir(root_fd: int, parts: Sequence[str]) -> int:
    """A descriptor of the folder root/parts (every component a real folder, no symlink)."""
    parts = check_parts(parts)
    if OPENAT2 is not False and parts:
        return open_beneath(root_fd, parts, DIR_FLAGS)
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise _explain(root_fd, parts[:i + 1], e)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _explain(root_fd: int, parts: Sequence[str], e: OSError) -> OSError:
    """Unsafe naming the first component that is a symlink, missing or not a folder; the
    original error otherwise. Only used for the message: the refusal already happened."""
    if e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EXDEV):
        return e
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            where = "/".join(parts[:i + 1])
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return Unsafe("missing", where, errno.ENOENT)
            except OSError:
                return e
            if stat.S_ISLNK(st.st_mode):
                return Unsafe("symlink", where, errno.ELOOP)
            if i == len(parts) - 1:
                break
            if not stat.S_ISDIR(st.st_mode):
                return Unsafe("notdir", where, errno.ENOTDIR)
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError:
                return Unsafe("symlink", where, errno.ELOOP) if e.errno == errno.ELOOP else e
            os.close(fd)
            fd = nxt
        # the last component exists and is no link: a file opened as a folder, or it changed
        if e.errno == errno.ENOTDIR and not stat.S_ISDIR(st.st_mode):
            return Unsafe("notdir", "/".join(parts), errno.ENOTDIR)
        return Unsafe("symlink", "/".join(parts), e.errno) if e.errno == errno.ELOOP else e
    finally:
        os.close(fd)


def make_dirs(root_fd: int, parts: Sequence[str], mode: int = 0o777) -> int:
    """mkdir -p of root/parts through descriptors (an existing link fails, ENOTDIR);
    returns the descriptor of the last folder."""
    fd = os.dup(root_fd)
    try:
        for part in check_parts(parts):
            try:
                os.mkdir(part, mode, dir_fd=fd)
            except FileExistsError:
                pass
            nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


# --- whole trees, through descriptors ------------------------------------------------------

def scan(dir_fd: int, prefix: Tuple[str, ...] = ()
         ) -> Iterator[Tuple[Tuple[str, ...], os.stat_result, int]]:
    """Every entry below dir_fd, depth first, sorted by name: (relative parts, lstat, the
    descriptor of its folder, valid during the step). Symlinks are yielded, never entered; a
    folder swapped for something else while scanned is skipped."""
    with os.scandir(dir_fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        try:
            st = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        parts = prefix + (entry.name,)
        yield parts, st, dir_fd
        if stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(entry.name, DIR_FLAGS, dir_fd=dir_fd)
            except OSError:  # became a link or vanished: nothing to enter
                continue
            try:
                yield from scan(sub, parts)
            finally:
                os.close(sub)


def open_regular(dir_fd: int, name: str) -> Optional[int]:
    """A read descriptor of dir_fd/name when it is a regular file (no link), else None."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def copy_tree(src_fd: int, dest_fd: int, skip: Callable[[str], bool] = lambda name: False,
              on_special: Callable[[Tuple[str, ...]], None] = lambda parts: None,
              budget: Optional[list] = None, prefix: Tuple[str, ...] = ()) -> int:
    """Copies the folder src_fd into the empty folder dest_fd: regular files with their mode
    and times, folders, symlinks as symlinks (never followed). Sockets, FIFOs and devices are
    reported to on_special. budget: [bytes left]; OSError(EFBIG) when the copy would exceed it.
    Returns the number of files copied."""
    count = 0
    with os.scandir(src_fd) as it:
        names = sorted(e.name for e in it)
    for name in names:
        if skip(name):
            continue
        parts = prefix + (name,)
        try:
            st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            try:
                os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dest_fd)
            except (FileNotFoundError, OSError) as e:
                if e.errno not in (errno.ENOENT, errno.EINVAL):  # vanished, or not a link now
                    raise
        elif stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(name, DIR_FLAGS, dir_fd=src_fd)
            except OSError:  # swapped for a link or removed while copying: not copied
                continue
            try:
                os.mkdir(name, 0o700, dir_fd=dest_fd)
                out = os.open(name, DIR_FLAGS, dir_fd=dest_fd)
                try:
                    count += copy_tree(sub, out, skip, on_special, budget, parts)
                    sst = os.fstat(sub)
                    os.chmod(out, stat.S_IMODE(sst.st_mode))
                    os.utime(out, ns=(sst.st_atime_ns, sst.st_mtime_ns))
                finally:
                    os.close(out)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            fd = open_regular(src_fd, name)
            if fd is None:
                continue
            try:
                copy_file(fd, dest_fd, name, budget)
            finally:
                os.close(fd)
            count += 1
        else:
            on_special(parts)
    return count


def copy_file(src: int, dest_dir_fd: int, name: str, budget: Optional[list] = None) -> int:
    """Copies the open file src to a new file dest_dir_fd/name (mode and times kept)."""
    st = os.fstat(src)
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600, dir_fd=dest_dir_fd)
    copied = 0
    try:
        while True:
            chunk = os.read(src, 1 << 20)
            if not chunk:
                break
            copied += len(chunk)
            if budget is not None:
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise OSError(errno.EFBIG, "the files grew beyond the size limit while copied")
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view):]
        os.chmod(out, stat.S_IMODE(st.st_mode))
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(out)
    return copied


def remove_tree(dir_fd: int, name: str) -> None:
    """Removes dir_fd/name and, if it is a folder, everything in it, through descriptors only:
    a link met on the way is removed itself, never followed."""
    for _ in range(8):  # an entry changing type under us is retried a few times, then left
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            try:
                os.unlink(name, dir_fd=dir_fd)
                return
            except FileNotFoundError:
                return
            except IsADirectoryError:
                continue
            except PermissionError:  # Linux answers EPERM for unlink of a folder
                continue
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                continue  # became a link or a file: unlink it on the next round
            raise
        try:
            with os.scandir(sub) as it:
                children = [e.name for e in it]
            for child in children:
                remove_tree(sub, child)
        finally:
            os.close(sub)
        try:
            os.rmdir(name, dir_fd=dir_fd)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                continue  # something was added meanwhile, or it was swapped
            raise


def rename_noreplace(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """renameat2(RENAME_NOREPLACE): FileExistsError when dst exists. Where renameat2 is
    missing, an existence check then renameat (a race there only replaces a project file)."""
    fn = getattr(_libc, "renameat2", None) if _libc is not None else None
    if fn is not None:
        r = fn(ctypes.c_int(src_dir_fd), ctypes.c_char_p(os.fsencode(src)),
               ctypes.c_int(dst_dir_fd), ctypes.c_char_p(os.fsencode(dst)),
               ctypes.c_uint(RENAME_NOREPLACE))
        if r == 0:
            return
        err = ctypes.get_errno()
        # ENOSYS/EINVAL: no renameat2 or a file system without NOREPLACE (EINVAL is also
        # "a folder into itself", which the renameat below reports the same way)
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), dst)
    try:
        os.stat(dst, dir_fd=dst_dir_fd, follow_symlinks=False)
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    except FileNotFoundError:
        pass
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
