"""Small helpers shared by the image build steps: hashing, scratch directories, a cache lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional

from ..errors import UserError

CHUNK = 1024 * 1024
LOG = logging.getLogger(__name__)


def sha256_json(value: Any) -> str:
    """sha256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_stream(stream: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A scratch directory under parent, removed on exit whatever happens; results are moved out
    of it with os.replace so a failed or interrupted step never leaves a half-made cache entry."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=str(parent)))
    try:
        yield path
    except BaseException:
        try:
            remove_tree(path)
        except Exception as cleanup:  # keep the original error in front of the user
            LOG.warning("could not remove %s: %s", path, cleanup)
        raise
    remove_tree(path)


def remove_tree(path: Path) -> None:
    """rmtree that refuses to cross into mounts (a chroot must never take the host with it)."""
    if not path.exists():
        return
    dev = path.stat().st_dev
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full) and os.lstat(full).st_dev != dev:
                raise UserError("refusing to delete %s: %s is a mount point; unmount it first" % (path, full))
    shutil.rmtree(path, ignore_errors=False)


@contextlib.contextmanager
def cache_lock(cache: Path, on_wait: Optional[Callable[[], None]] = None) -> Iterator[None]:
    """Serialises builds that share a cache directory (another build waits for this one)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


SHM = Path("/dev/shm")
SHM_MIN_FREE = 4 * 1000 ** 3  # an image tree takes about 1 GB; leave room for everything else


def scratch_parent(cache: Path, override: Optional[Path] = None, shm: Path = SHM,
                   min_free: int = SHM_MIN_FREE) -> Path:
    """Where image trees are assembled: `override` if given; else RAM (the tmpfs at /dev/shm) when
    it is mounted exec with min_free bytes free, since unpacking tens of thousands of small files
    is many times faster there than on a disk; else the cache directory."""
    if override is not None:
        return Path(override)
    try:
        st = os.statvfs(shm)
    except OSError:
        return cache / "tmp"
    if st.f_bavail * st.f_frsize >= min_free and _mounted_exec_tmpfs(shm):
        return shm / "cdsw-images"
    return cache / "tmp"


def _mounted_exec_tmpfs(path: Path, mounts: Path = Path("/proc/mounts")) -> bool:
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[1] == str(path):
            return fields[2] == "tmpfs" and "noexec" not in fields[3].split(",")
    return False
