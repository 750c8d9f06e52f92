"""Project files on disk. Every path stays inside the project's folder.

Refused: absolute paths, `..`, NUL bytes, and symlinks whose target leaves the
project. Writes go to a temporary file in the same folder, then rename, so a
reader never sees half a file and a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, List, Optional

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
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise FileError(400, "a path component is longer than 255 bytes")
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
    def __init__(self, root: Path, owner: Optional[int] = None):
        self.root = root
        self.owner = owner  # uid new files and folders are given to (see engine_owner)
        self._real_root = os.path.realpath(root)

    def _own(self, path: str) -> None:
        if self.owner is not None:
            os.lchown(path, self.owner, self.owner)

    # --- resolution
    def _inside(self, real: str) -> bool:
        return real == self._real_root or real.startswith(self._real_root + os.sep)

    def resolve(self, rel: str, *, must_exist: bool = False) -> Path:
        clean = clean_relative(rel)
        path = self.root.joinpath(*clean.parts) if clean.parts else self.root
        if not self._inside(os.path.realpath(path)):
            raise FileError(403, "path %r points outside the project (through a symlink)" % rel)
        if must_exist and not os.path.lexists(path):
            raise FileError(404, "no file or folder %r in this project" % str(clean))
        return path

    def relative(self, path: Path) -> str:
        return str(PurePosixPath(*path.relative_to(self.root).parts))

    # --- reading
    def list(self, rel: str = "") -> List[Entry]:
        folder = self.resolve(rel, must_exist=True)
        if not folder.is_dir():
            raise FileError(400, "%r is a file, not a folder" % rel)
        out = []
        with os.scandir(folder) as it:
            for item in it:
                st = item.stat(follow_symlinks=False)
                if item.is_symlink():
                    kind = "symlink"
                elif stat.S_ISDIR(st.st_mode):
                    kind = "directory"
                else:
                    kind = "file"
                out.append(Entry(item.name, self.relative(Path(item.path)), kind,
                                 st.st_size if kind == "file" else 0, st.st_mtime))
        return sorted(out, key=lambda e: (e.type != "directory", e.name.lower()))

    def read_text(self, rel: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
        path = self._existing_file(rel)
        if path.stat().st_size > max_bytes:
            raise FileError(413, "%r is larger than %d MiB; download it instead"
                            % (rel, max_bytes // CHUNK))
        data = path.read_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise FileError(415, "%r is not UTF-8 text; download it instead" % rel)

    def _existing_file(self, rel: str) -> Path:
        path = self.resolve(rel, must_exist=True)
        if path.is_dir():
            raise FileError(400, "%r is a folder, not a file" % rel)
        if not path.is_file():
            raise FileError(400, "%r is not a regular file" % rel)
        return path

    def open_file(self, rel: str) -> Path:
        return self._existing_file(rel)

    def archive_folder(self, rel: str) -> BinaryIO:
        """A tar.gz of a folder in a temporary file (spooled), members relative to the folder."""
        folder = self.resolve(rel, must_exist=True)
        if not folder.is_dir():
            raise FileError(400, "%r is a file, not a folder" % rel)
        out = tempfile.SpooledTemporaryFile(max_size=16 * CHUNK)
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames.sort()
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    if full.is_symlink() and not self._inside(os.path.realpath(full)):
                        continue  # never ship files from outside the project
                    tar.add(str(full), arcname=str(full.relative_to(folder)), recursive=False)
        out.seek(0)
        return out  # type: ignore[return-value]

    # --- writing
    def write_text(self, rel: str, content: str) -> Path:
        return self.write_stream(rel, iter([content.encode("utf-8")]), max_bytes=None)

    def write_stream(self, rel: str, chunks: Iterator[bytes], max_bytes: Optional[int]) -> Path:
        path = self.resolve(rel)
        if not clean_relative(rel).parts:
            raise FileError(400, "give a file name")
        if path.is_dir():
            raise FileError(409, "%r is a folder" % rel)
        if not path.parent.is_dir():
            raise FileError(404, "folder %r does not exist; create it first"
                            % str(clean_relative(rel).parent))
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=str(path.parent))
        written = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    written += len(chunk)
                    if max_bytes is not None and written > max_bytes:
                        raise FileError(413, "upload is larger than %d MiB" % (max_bytes // CHUNK))
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            self._own(tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    def mkdir(self, rel: str) -> Path:
        path = self.resolve(rel)
        if not clean_relative(rel).parts:
            raise FileError(400, "give a folder name")
        if os.path.lexists(path):
            raise FileError(409, "%r already exists" % rel)
        if not path.parent.is_dir():
            raise FileError(404, "parent folder of %r does not exist" % rel)
        path.mkdir()
        self._own(str(path))
        return path

    def move(self, src: str, dst: str) -> Path:
        source = self.resolve(src, must_exist=True)
        target = self.resolve(dst)
        if not clean_relative(src).parts or not clean_relative(dst).parts:
            raise FileError(400, "cannot move the project's root folder")
        if os.path.lexists(target):
            raise FileError(409, "%r already exists" % dst)
        if not target.parent.is_dir():
            raise FileError(404, "destination folder of %r does not exist" % dst)
        if source.is_dir() and str(target).startswith(str(source) + os.sep):
            raise FileError(400, "cannot move a folder into itself")
        os.rename(source, target)
        return target

    def delete(self, rel: str) -> None:
        path = self.resolve(rel, must_exist=True) if clean_relative(rel).parts else None
        if path is None:
            raise FileError(400, "cannot delete the project's root folder; delete the project")
        if path.is_dir() and not path.is_symlink():
            trash = path.with_name(".deleting-" + path.name + "-" + os.urandom(4).hex())
            os.rename(path, trash)  # atomic disappearance, then the slow part
            shutil.rmtree(trash, ignore_errors=True)
        else:
            path.unlink()


# --- archives -------------------------------------------------------------------------------

def _safe_member(name: str) -> PurePosixPath:
    try:
        clean = clean_relative(name)
    except FileError as e:
        raise FileError(422, "archive member %r refused: %s" % (name[:200], e))
    return clean


def extract_archive(archive: Path, dest: Path, max_bytes: int) -> int:
    """Extract a zip or tar archive into dest, refusing members that escape it, links and
    special files. Returns the number of files. dest must be an empty folder."""
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
                if not clean.parts:
                    continue
                target = dest.joinpath(*clean.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "wb") as out:
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
            if not clean.parts:
                continue
            target = dest.joinpath(*clean.parts)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is None:
                continue
            with src, open(target, "wb") as out:
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
