"""`cdsw db restore`: put a backup back in place of the database (and project files).

A backup is what `Database.backup` or `Database.backup_with_files` wrote: a `.sqlite` file, a
plain pg_dump `.sql` file, or a `.tar.gz` holding one of those plus `projects/`. Nothing is
changed until the backup has been read and checked (integrity, a schema revision this software
knows), and what is replaced is kept: the SQLite file and its WAL are renamed aside together
(a leftover newer WAL is never replayed over the restored file), PostgreSQL gets a pg_dump
first, project files are renamed aside.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

from . import lock
from .db import (Database, DatabaseError, _stamp, pg_connection_args, pg_env, pg_tool)

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

# Empties the public schema before a plain dump is loaded (inside the same transaction).
CLEAR_PUBLIC_SCHEMA = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') LOOP
    EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
                   CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                  WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
                                  ELSE 'TABLE' END, r.relname);
  END LOOP;
  FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') LOOP
    EXECUTE format('DROP TYPE IF EXISTS public.%I CASCADE', r.typname);
  END LOOP;
END $$;
"""
DUMP_REVISION = re.compile(r"^COPY public\.alembic_version \(version_num\) FROM stdin;\n(\S+)\n",
                           re.MULTILINE)


def restore(db: Database, backup: Path, data_dir: str, projects_dir: Path,
            backups_dir: Path) -> List[str]:
    """Restore backup; returns the lines to show the admin. Refuses while a master runs."""
    if not backup.is_file():
        raise DatabaseError("no backup file %s; list them with `ls %s`" % (backup, backups_dir))
    try:
        lock.acquire(data_dir, "restore")
    except lock.LockBusy as e:
        raise DatabaseError("the master is running (pid %s) on data directory %s; stop the "
                            "CDSW_MASTER role before restoring" % (e, data_dir))
    except OSError as e:
        raise DatabaseError("cannot take the lock %s: %s; run `cdsw db restore` as the user the "
                            "master runs as" % (lock.lock_path(data_dir), e.strerror or e))
    try:
        if not db.is_sqlite and lock.postgres_masters(db.engine):
            raise DatabaseError("a master is connected to %s; stop the CDSW_MASTER role before "
                                "restoring" % db.display_url)
        with _unpacked(backup, Path(data_dir)) as (db_file, projects):
            lines = (_restore_sqlite(db, db_file) if db.is_sqlite
                     else _restore_postgres(db, db_file, backups_dir))
            if projects is not None:
                lines.append(_restore_projects(projects, projects_dir))
            return lines
    finally:
        lock.release(data_dir)
        db.engine.dispose()


def _extract_safely(tar: tarfile.TarFile, dest: str) -> None:
    """Extract with the "tar" filter: nothing lands outside dest (names, hard links), no setuid
    bits; the users' own symbolic links are kept as they were. Pythons before 3.11.4 (Debian
    bookworm has 3.11.2) have no filters: the same checks are made by hand there."""
    if hasattr(tarfile, "tar_filter"):
        tar.extractall(dest, filter="tar")
        return
    root = os.path.realpath(dest)
    members, links = [], set()
    for m in tar.getmembers():
        parts = m.name.split("/")
        if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            raise tarfile.TarError("member %r lies beneath a symbolic link" % m.name)
        if m.issym():
            links.add(m.name.rstrip("/"))
        target = os.path.realpath(os.path.join(root, m.name))
        if os.path.isabs(m.name) or not (target == root or target.startswith(root + os.sep)):
            raise tarfile.TarError("member %r would land outside the archive's folder" % m.name)
        if m.islnk():
            link = os.path.realpath(os.path.join(root, m.linkname))
            if not link.startswith(root + os.sep):
                raise tarfile.TarError("hard link %r points outside the archive" % m.name)
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise tarfile.TarError("member %r is a device or a pipe" % m.name)
        m.mode &= 0o777  # no setuid, setgid or sticky bits
        members.append(m)
    tar.extractall(dest, members=members)


@contextmanager
def _unpacked(backup: Path, scratch_parent: Path) -> Iterator[Tuple[Path, Optional[Path]]]:
    """(database file, projects folder or None) of a backup file or archive."""
    if not tarfile.is_tarfile(str(backup)):
        yield backup, None
        return
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cdsw-restore-", dir=str(scratch_parent)) as work:
        try:
            with tarfile.open(str(backup)) as tar:
                _extract_safely(tar, work)
        except (tarfile.TarError, OSError) as e:
            raise DatabaseError("cannot unpack backup %s: %s" % (backup, e))
        found = sorted(Path(work).glob("database.*"))
        if len(found) != 1:
            raise DatabaseError("backup %s holds no database.sqlite or database.sql; is it a "
                                "`cdsw db backup --with-files` archive?" % backup)
        projects = Path(work) / "projects"
        yield found[0], projects if projects.is_dir() else None


def _check_revision(db: Database, revision: Optional[str], backup: Path) -> List[str]:
    if revision is None:
        raise DatabaseError("backup %s holds no schema revision (no alembic_version); it is not "
                            "a workbench database backup" % backup)
    if not db.knows_revision(revision):
        raise DatabaseError("backup %s is at schema revision %s, which this version of the "
                            "workbench does not know (its newest is %s); restore it with the "
                            "version that made it" % (backup, revision, db.head_revision()))
    if revision != db.head_revision():
        return ["the backup is at schema revision %s: the next master start upgrades it to %s "
                "(after a backup)" % (revision, db.head_revision())]
    return []


def _restore_sqlite(db: Database, source: Path) -> List[str]:
    target = db.sqlite_path
    if target is None:
        raise DatabaseError("cannot restore into an in-memory database")
    if source.suffix != ".sqlite" and _looks_like_dump(source):
        raise DatabaseError("backup %s is a PostgreSQL dump but the database %s is SQLite"
                            % (source, db.display_url))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name("." + target.name + ".restoring")
    _remove_sqlite(tmp)
    try:
        try:
            src = sqlite3.connect("file:%s?mode=ro" % source, uri=True)
            try:
                dst = sqlite3.connect(str(tmp))
                try:
                    with dst:
                        src.backup(dst)
                    check = [r[0] for r in dst.execute("PRAGMA quick_check").fetchall()]
                    row = None
                    if dst.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                   "name = 'alembic_version'").fetchone():
                        row = dst.execute("SELECT version_num FROM alembic_version").fetchone()
                finally:
                    dst.close()
            finally:
                src.close()
        except sqlite3.Error as e:
            raise DatabaseError("cannot read backup %s: %s; is it a workbench SQLite backup?"
                                % (source, e))
        if check != ["ok"]:
            raise DatabaseError("backup %s is damaged (%s); choose another backup"
                                % (source, "; ".join(check[:3])))
        notes = _check_revision(db, row[0] if row else None, source)
        kept = _set_aside_sqlite(target)
        os.replace(tmp, target)  # no -wal/-shm beside target now: nothing newer can replay
        _fsync_dir(target.parent)
    finally:
        _remove_sqlite(tmp)
    lines = ["restored database %s from %s" % (db.display_url, source)]
    if kept:
        lines.append("the database it replaced is kept as %s (delete it when no longer needed)"
                     % kept)
    return lines + notes


def _set_aside_sqlite(target: Path) -> Optional[Path]:
    """Rename the live database and its WAL together (they stay a consistent pair), drop the
    shared-memory index. Returns the new name, None when there was no database."""
    if not target.exists():
        for suffix in SQLITE_SIDE_FILES:
            Path(str(target) + suffix).unlink(missing_ok=True)
        return None
    kept = target.with_name("%s.replaced-%s" % (target.name, _stamp()))
    for suffix in ("-wal", "-journal"):
        side = Path(str(target) + suffix)
        if side.exists():
            os.replace(side, str(kept) + suffix)
    os.replace(target, kept)
    Path(str(target) + "-shm").unlink(missing_ok=True)
    return kept


def _remove_sqlite(path: Path) -> None:
    for suffix in ("",) + SQLITE_SIDE_FILES:
        Path(str(path) + suffix).unlink(missing_ok=True)


def _looks_like_dump(path: Path) -> bool:
    with path.open("rb") as f:
        return not f.read(16).startswith(b"SQLite format 3")


def _restore_postgres(db: Database, source: Path, backups_dir: Path) -> List[str]:
    if not _looks_like_dump(source):
        raise DatabaseError("backup %s is a SQLite file but the database %s is PostgreSQL"
                            % (source, db.display_url))
    try:
        dump = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatabaseError("cannot read backup %s: %s" % (source, e))
    if "PostgreSQL database dump" not in dump[:2000]:
        raise DatabaseError("backup %s is not a plain pg_dump file (as `cdsw db backup` writes)"
                            % source)
    found = DUMP_REVISION.search(dump)
    notes = _check_revision(db, found.group(1) if found else None, source)
    psql = pg_tool("psql", "restore")
    kept = db.backup(backups_dir, label="pre-restore")
    proc = subprocess.run(
        [psql, "--no-psqlrc", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1",
         "-c", CLEAR_PUBLIC_SCHEMA, "-f", str(source)] + pg_connection_args(db.url),
        env=pg_env(db.url), capture_output=True, text=True)
    if proc.returncode != 0:
        error = next((ln for ln in proc.stderr.splitlines() if "ERROR" in ln or "FATAL" in ln),
                     proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else "failed")
        raise DatabaseError("restoring %s into %s failed, nothing was changed: %s"
                            % (source, db.display_url, error))
    return ["restored database %s from %s" % (db.display_url, source),
            "the database it replaced was backed up to %s" % kept] + notes


def _restore_projects(extracted: Path, projects_dir: Path) -> str:
    projects_dir.parent.mkdir(parents=True, exist_ok=True)
    kept = None
    if projects_dir.exists():
        kept = projects_dir.with_name("%s.replaced-%s" % (projects_dir.name, _stamp()))
        try:
            os.replace(projects_dir, kept)
        except OSError as e:
            raise DatabaseError("the database is restored but the project files are not: cannot "
                                "move %s aside (%s); is it a mount point? Copy projects/ from the "
                                "backup archive by hand" % (projects_dir, e.strerror or e))
    shutil.move(str(extracted), str(projects_dir))
    line = "restored project files into %s" % projects_dir
    if kept:
        line += "; the files they replaced are kept in %s" % kept
    return line


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
