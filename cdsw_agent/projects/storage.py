"""Project files on disk. Every path stays inside the project's folder.

Refused: absolute paths, `..`, NUL bytes, and symbolic links at any level of a path: engine
code owns the folder and could swap a file for a link at any moment, so links are listed (as
"symlink") and can be moved or deleted, but are never followed (safe_fs.py does the opening).
Writes go to a temporary file created in the same folder's descriptor, then renameat, so a
reader never sees half a file and a failed write leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, List, Optional, Tuple

from . import safe_fs

CHUNK = 1024 * 1024
MAX_TEXT_BYTES = 10 * 1024 * 1024


class FileError(Exception):
    """A refused file operation. `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Entry:
    name: str
    path: str
    type: str  # file | directory | symlink
    size: int
    modified: float


def clean_relative(rel: str) -> PurePosixPath:
    """Validate a user-given project-relative path (no resolution on disk)."""
    if rel is None:
        rel = ""
    if "\x00" in rel:
        raise FileError(400, "path contains a NUL byte")
    if len(rel) > 4096:
        raise FileError(400, "path is longer than 4096 characters")
    if rel.startswith("/") or rel.startswith("\\"):
        raise FileError(400, "path %r is absolute; give a path relative to the project" % rel)
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise FileError(400, "path %r leaves the project ('..' is not allowed)" % rel)
    try:
        if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
            raise FileError(400, "a path component is longer than 255 bytes")
    except UnicodeEncodeError:
        raise FileError(400, "path %r is not valid UTF-8" % rel)
    return PurePosixPath(*parts) if parts else PurePosixPath()


def engine_owner() -> Optional[int]:
    """The uid project files belong to, so engines (which run as that uid) can change them;
    None when this process cannot give files away (not root: a laptop with local engines)."""
    if os.geteuid() != 0:
        return None
    from ..images.recipe import ENGINE_UID

    return ENGINE_UID


def chown_tree(root: Path, uid: Optional[int]) -> None:
    if uid is None:
        return
    os.lchown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


class ProjectFiles:
    """Operations on one project's folder. Each opens the folder, resolves the path beneath it
    with safe_fs (no symlink followed at any level) and works on descriptors from then on, so
    engine code swapping files for links while we work cannot redirect a read or a write."""

    def __init__(self, root: Path, owner: Optional[int] = None):
        self.root = root
        self.owner = owner  # uid new files and folders are given to (see engine_owner)

    # --- resolution
    @contextmanager
    def _opened(self) -> Iterator[int]:
        try:
            fd = os.open(str(self.root), safe_fs.DIR_FLAGS)
        except OSError as e:
            raise FileError(409, "the project's folder cannot be opened (%s); restore it from a "
                            "backup" % (e.strerror or e))
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _parent(self, parts: Tuple[str, ...], rel: str, missing: str) -> Iterator[int]:
        """The descriptor of the folder holding parts[-1]; `missing` is the 404 message."""
        with self._opened() as root:
            try:
                fd = safe_fs.open_dir(root, parts[:-1])
            except OSError as e:
                raise _refusal(e, rel, missing)
            try:
                yield fd
            finally:
                os.close(fd)

    # --- reading
    def list(self, rel: str = "") -> List[Entry]:
        clean = clean_relative(rel)
        with self._opened() as root:
            try:
                folder = safe_fs.open_dir(root, clean.parts)
            except OSError as e:
                raise _refusal(e, rel)
            try:
                out = []
                with os.scandir(folder) as it:
                    names = [item.name for item in it]
                for name in names:
                    try:
                        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    out.append(_entry(name, str(clean / name), st))
            finally:
                os.close(folder)
        return sorted(out, key=lambda e: (e.type != "directory", e.name.lower()))

    def entry(self, rel: str) -> Entry:
        """What rel is (a symlink is reported as one, not followed); 404 when missing."""
        clean = clean_relative(rel)
        if not clean.parts:
            with self._opened() as root:
                return _entry("", "", os.fstat(root))
        with self._parent(clean.parts, rel, "no file or folder %r in this project" % str(clean)
                          ) as parent:
            try:
                st = os.stat(clean.name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise FileError(404, "no file or folder %r in this project" % str(clean))
        return _entry(clean.name, str(clean), st)

    def exists(self, rel: str) -> bool:
        try:
            self.entry(rel)
        except FileError as e:
            if e.status == 404:
                return False
            raise
        return True

    @contextmanager
    def _open_regular(self, rel: str) -> Iterator[Tuple[int, os.stat_result]]:
        clean = clean_relative(rel)
        with self._opened() as root:
            try:
                fd = safe_fs.open_beneath(root, clean.parts, safe_fs.READ_FLAGS)
            except OSError as e:
                raise _refusal(e, rel)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise FileError(400, "%r is a folder, not a file" % rel)
            if not stat.S_ISREG(st.st_mode):
                raise FileError(400, "%r is not a regular file" % rel)
            yield fd, st
        finally:
            os.close(fd)

    def read_text(self, rel: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
        return self.read_text_entry(rel, max_bytes)[0]

    def read_text_entry(self, rel: str, max_bytes: int = MAX_TEXT_BYTES) -> Tuple[str, Entry]:
        """The text of a file and its entry, both from the one descriptor opened."""
        with self._open_regular(rel) as (fd, st):
            too_big = FileError(413, "%r is larger than %d MiB; download it instead"
                                % (rel, max_bytes // CHUNK))
            if st.st_size > max_bytes:
                raise too_big
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(max_bytes + 1)
            if len(data) > max_bytes:  # it grew since fstat
                raise too_big
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FileError(415, "%r is not UTF-8 text; download it instead" % rel)
        clean = clean_relative(rel)
        return text, _entry(clean.name, str(clean), st)

    def download(self, rel: str) -> "Download":
        """A file as it is, or a folder as a tar.gz, read from the descriptor opened here."""
        clean = clean_relative(rel)
        with self._opened() as root:
            try:
                fd = safe_fs.open_beneath(root, clean.parts, safe_fs.READ_FLAGS)
            except OSError as e:
                raise _refusal(e, rel)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                return Download(clean.name, _archive(fd), None, True)
            if not stat.S_ISREG(st.st_mode):
                raise FileError(400, "%r is not a regular file" % rel)
            f = os.fdopen(os.dup(fd), "rb")
            return Download(clean.name, _Exactly(f, st.st_size), st.st_size,  # type: ignore
                            False)
        finally:
            os.close(fd)

    def archive_folder(self, rel: str) -> BinaryIO:
        """A tar.gz of a folder in a temporary file (spooled), members relative to the folder."""
        d = self.download(rel)
        if not d.archive:
            d.stream.close()
            raise FileError(400, "%r is a file, not a folder" % rel)
        return d.stream

    def require_folder(self, rel: str) -> None:
        clean = clean_relative(rel)
        with self._opened() as root:
            try:
                os.close(safe_fs.open_dir(root, clean.parts))
            except OSError as e:
                raise _refusal(e, rel)

    # --- writing
    def write_text(self, rel: str, content: str) -> Entry:
        return self.write_stream(rel, iter([content.encode("utf-8")]), max_bytes=None)

    def write_stream(self, rel: str, chunks: Iterator[bytes], max_bytes: Optional[int]) -> Entry:
        clean = clean_relative(rel)
        if not clean.parts:
            raise FileError(400, "give a file name")
        name = clean.name
        missing = "folder %r does not exist; create it first" % str(clean.parent)
        with self._parent(clean.parts, rel, missing) as parent:
            _refuse_existing_non_file(parent, name, rel)
            tmp = ".upload-%s" % os.urandom(6).hex()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=parent)
            written = 0
            try:
                try:
                    for chunk in chunks:
                        written += len(chunk)
                        if max_bytes is not None and written > max_bytes:
                            raise FileError(413, "upload is larger than %d MiB"
                                            % (max_bytes // CHUNK))
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
                    os.fsync(fd)
                    os.chmod(fd, 0o644)
                    if self.owner is not None:
                        os.chown(fd, self.owner, self.owner)
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
                try:
                    os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
                except IsADirectoryError:
                    raise FileError(409, "%r is a folder" % rel)
            except BaseException as e:
                try:
                    os.unlink(tmp, dir_fd=parent)
                except FileNotFoundError:
                    pass
                if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise _refusal(e, rel)
                raise
        return _entry(name, str(clean), st)

    def mkdir(self, rel: str) -> Entry:
        clean = clean_relative(rel)
        if not clean.parts:
            raise FileError(400, "give a folder name")
        with self._parent(clean.parts, rel, "parent folder of %r does not exist" % rel) as parent:
            try:
                os.mkdir(clean.name, 0o777, dir_fd=parent)
            except FileExistsError:
                raise FileError(409, "%r already exists" % rel)
            try:
                fd = os.open(clean.name, safe_fs.DIR_FLAGS, dir_fd=parent)
            except OSError:  # replaced (by a link...) right after it was made
                raise FileError(409, "%r changed while it was created; look at it and retry"
                                % rel)
            try:
                if self.owner is not None:
                    os.chown(fd, self.owner, self.owner)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        return _entry(clean.name, str(clean), st)

    def move(self, src: str, dst: str) -> Entry:
        """Renames src to dst (a symlink is moved as the link itself)."""
        source, target = clean_relative(src), clean_relative(dst)
        if not source.parts or not target.parts:
            raise FileError(400, "cannot move the project's root folder")
        if len(target.parts) > len(source.parts) \
                and target.parts[:len(source.parts)] == source.parts:
            raise FileError(400, "cannot move a folder into itself")
        with self._parent(source.parts, src, "no file or folder %r in this project"
                          % str(source)) as sp, \
                self._parent(target.parts, dst, "destination folder of %r does not exist"
                             % dst) as dp:
            try:
                st = os.stat(source.name, dir_fd=sp, follow_symlinks=False)
                safe_fs.rename_noreplace(sp, source.name, dp, target.name)
            except FileExistsError:
                raise FileError(409, "%r already exists" % dst)
            except FileNotFoundError:
                raise FileError(404, "no file or folder %r in this project" % str(source))
            except OSError as e:
                if e.errno == errno.EINVAL:
                    raise FileError(400, "cannot move a folder into itself")
                raise _refusal(e, src)
        return _entry(target.name, str(target), st)  # the moved entry (rename keeps its inode)

    def delete(self, rel: str) -> None:
        """Removes a file, a link (not what it points to) or a folder with its contents."""
        clean = clean_relative(rel)
        if not clean.parts:
            raise FileError(400, "cannot delete the project's root folder; delete the project")
        missing = "no file or folder %r in this project" % str(clean)
        with self._parent(clean.parts, rel, missing) as parent:
            trash = ".deleting-%s" % os.urandom(8).hex()
            try:  # atomic disappearance, then the slow part
                os.rename(clean.name, trash, src_dir_fd=parent, dst_dir_fd=parent)
            except FileNotFoundError:
                raise FileError(404, missing)
            safe_fs.remove_tree(parent, trash)


@dataclass
class Download:
    name: str
    stream: BinaryIO
    size: Optional[int]  # None for an archive
    archive: bool


def _entry(name: str, rel: str, st: os.stat_result) -> Entry:
    if stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(st.st_mode):
        kind = "directory"
    else:
        kind = "file"
    return Entry(name, rel, kind, st.st_size if kind == "file" else 0, st.st_mtime)


def _refuse_existing_non_file(parent: int, name: str, rel: str) -> None:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise FileError(409, "%r is a folder" % rel)
    if stat.S_ISLNK(st.st_mode):
        raise FileError(409, "%r is a symbolic link; the files API does not write through links: "
                        "delete it or write to the file it points to" % rel)
    if not stat.S_ISREG(st.st_mode):
        raise FileError(409, "%r is not a regular file" % rel)


def _refusal(e: OSError, rel: str, missing: str = "") -> FileError:
    """The one-line FileError for a failed open beneath the project."""
    if isinstance(e, FileError):
        return e
    if isinstance(e, safe_fs.Unsafe):
        if e.kind == "symlink":
            return FileError(409, "%r is a symbolic link; the files API does not follow links "
                             "(use the path of what it points to, or delete the link)" % e.where)
        if e.kind == "notdir":
            return FileError(400, "%r is a file, not a folder" % e.where)
        if e.kind == "invalid":
            return FileError(400, "path %r is not a valid project path" % rel)
        return FileError(404, missing or "no file or folder %r in this project" % e.where)
    if e.errno == errno.ENOENT:
        return FileError(404, missing or "no file or folder %r in this project" % rel)
    if e.errno == errno.ENOTDIR:
        return FileError(400, "%r is a file, not a folder" % rel)
    if e.errno in (errno.ELOOP, errno.EXDEV):
        return FileError(409, "%r goes through a symbolic link; the files API does not follow "
                         "links" % rel)
    if e.errno in (errno.EACCES, errno.EPERM):
        return FileError(403, "%r cannot be opened: permission denied" % rel)
    if e.errno == errno.ENAMETOOLONG:
        return FileError(400, "path %r is too long" % rel)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return FileError(507, "the disk holding the project is full; free some space")
    raise e


def _archive(folder: int) -> BinaryIO:
    """A tar.gz of the open folder: its regular files and folders, through descriptors; links,
    sockets, FIFOs and devices are left out (never followed)."""
    out = tempfile.SpooledTemporaryFile(max_size=16 * CHUNK)
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for parts, st, dir_fd in safe_fs.scan(folder):
            if not stat.S_ISREG(st.st_mode):
                continue
            fd = safe_fs.open_regular(dir_fd, parts[-1])
            if fd is None:  # changed since it was listed
                continue
            with os.fdopen(fd, "rb") as f:
                fst = os.fstat(fd)
                info = tarfile.TarInfo("/".join(parts))
                info.size, info.mtime = fst.st_size, int(fst.st_mtime)
                info.mode = stat.S_IMODE(fst.st_mode)
                info.uid, info.gid = fst.st_uid, fst.st_gid
                tar.addfile(info, _Exactly(f, fst.st_size))
    out.seek(0)
    return out  # type: ignore[return-value]


class _Exactly:
    """Reads exactly `size` bytes from f: a file that shrinks while archived is padded with
    zeros, one that grows is cut, so a concurrent writer cannot break the archive."""

    def __init__(self, f: BinaryIO, size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        data = self.f.read(n) if n else b""
        data += b"\0" * (n - len(data))
        self.left -= n
        return data

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "_Exactly":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- archives -------------------------------------------------------------------------------

def _safe_member(name: str) -> PurePosixPath:
    try:
        clean = clean_relative(name)
    except FileError as e:
        raise FileError(422, "archive member %r refused: %s" % (name[:200], e))
    return clean


def extract_archive(archive: Path, dest: Path, max_bytes: int) -> int:
    """Extract a zip or tar archive into dest, refusing members that escape it, links and
    special files. Returns the number of files. dest must be an empty folder; it is written
    through its descriptor (safe_fs), never through a link."""
    dest_fd = os.open(str(dest), safe_fs.DIR_FLAGS)
    try:
        return _extract(archive, dest_fd, max_bytes)
    finally:
        os.close(dest_fd)


def _extract_member(dest_fd: int, clean: PurePosixPath, is_dir: bool) -> Optional[BinaryIO]:
    """Makes the member's folders; a new file to write for a file member (None for a folder)."""
    if not clean.parts:
        return None
    parts = clean.parts if is_dir else clean.parts[:-1]
    try:
        folder = safe_fs.make_dirs(dest_fd, parts)
        if is_dir:
            os.close(folder)
            return None
        try:
            fd = os.open(clean.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644, dir_fd=folder)
        finally:
            os.close(folder)
    except OSError as e:
        raise FileError(422, "archive member %r cannot be extracted (%s); members clash"
                        % (str(clean)[:200], e.strerror or e))
    return os.fdopen(fd, "wb")  # type: ignore[return-value]


def _extract(archive: Path, dest_fd: int, max_bytes: int) -> int:
    total = 0
    count = 0
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _safe_member(info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise FileError(422, "archive member %r is a link or special file; refused"
                                    % info.filename)
                total += info.file_size
                if total > max_bytes:
                    raise FileError(413, "archive expands to more than %d MiB" % (max_bytes // CHUNK))
            for info in infos:
                clean = _safe_member(info.filename)
                out = _extract_member(dest_fd, clean, info.is_dir())
                if out is None:
                    continue
                try:
                    with zf.open(info) as src, out:
                        _copy_limited(src, out, info.file_size)
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as e:
                    raise FileError(422, "the archive is damaged: %s" % e)
                count += 1
        return count
    try:
        tf = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError):
        raise FileError(422, "the upload is not a zip or tar archive (tar, tar.gz, tar.bz2, tar.xz)")
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise FileError(422, "the archive is damaged: %s" % e)
        for m in members:
            _safe_member(m.name)
            if not (m.isfile() or m.isdir()):
                raise FileError(422, "archive member %r is a link or special file; refused" % m.name)
            total += m.size
            if total > max_bytes:
                raise FileError(413, "archive expands to more than %d MiB" % (max_bytes // CHUNK))
        for m in members:
            clean = _safe_member(m.name)
            out = _extract_member(dest_fd, clean, m.isdir())
            if out is None:
                continue
            src = tf.extractfile(m)
            if src is None:
                out.close()
                continue
            with src, out:
                try:
                    _copy_limited(src, out, m.size)
                except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as e:
                    raise FileError(422, "the archive is damaged: %s" % e)
            count += 1
    return count


def _copy_limited(src: BinaryIO, out: BinaryIO, declared: int) -> None:
    copied = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        copied += len(chunk)
        if copied > declared:  # a member that lies about its size
            raise FileError(422, "archive member is larger than it declares; refused")
        out.write(chunk)
