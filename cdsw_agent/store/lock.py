"""Who may change the database: a running master, or a restore, never both.

The master holds an exclusive lock on `<data dir>/master.lock` for as long as it runs (the
kernel drops it when the process ends, even on kill -9); `cdsw db restore` takes the same lock,
so it refuses while a master runs and a master cannot start in the middle of a restore. On
PostgreSQL a master on another host is seen by its connections' application_name instead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Dict, Optional

from sqlalchemy import text

LOCK_NAME = "master.lock"
MASTER_APPLICATION_NAME = "cdsw-master"  # PostgreSQL connections of a running master

_held: Dict[str, int] = {}  # lock path -> open file descriptor, for this process's lifetime


class LockBusy(Exception):
    """Another process holds the lock; str() names it."""


def lock_path(data_dir: str) -> Path:
    return Path(data_dir) / LOCK_NAME


def holder(data_dir: str) -> Optional[str]:
    """The pid written by the process that holds the lock, or None when nobody holds it."""
    path = lock_path(data_dir)
    if str(path) in _held or not path.exists():
        return None
    fd = os.open(str(path), os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return path.read_text().strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def acquire(data_dir: str, what: str) -> None:
    """Hold the lock until this process ends or release() (idempotent within a process)."""
    path = lock_path(data_dir)
    if str(path) in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockBusy(path.read_text().strip() or "unknown")
    os.ftruncate(fd, 0)
    os.write(fd, ("%d %s\n" % (os.getpid(), what)).encode())
    _held[str(path)] = fd


def release(data_dir: str) -> None:
    fd = _held.pop(str(lock_path(data_dir)), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def postgres_masters(engine) -> int:  # type: ignore[no-untyped-def]
    """How many other connections to this PostgreSQL database come from a running master."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = :name AND pid <> pg_backend_pid()"),
            {"name": MASTER_APPLICATION_NAME}).scalar() or 0)
