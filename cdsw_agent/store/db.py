"""Database engine, sessions, migrations and backups.

SQLite (WAL, foreign keys on) is the embedded default; PostgreSQL by URL. The
schema is only ever changed by Alembic migrations, and `upgrade_with_backup`
takes a backup before it moves the schema forward. Each revision is applied in
its own transaction, on SQLite too (see `make_engine(transactional_ddl=True)`),
so a failure leaves the database at the previous revision.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# PRAGMA quick_check reads the whole file: /healthz reuses its answer this long (seconds)
INTEGRITY_CACHE_SECONDS = 10.0


class DatabaseError(Exception):
    """A database problem with a one-line explanation for the admin."""


def make_engine(url: str, transactional_ddl: bool = False,
                application_name: Optional[str] = None) -> Engine:
    """An engine for url. transactional_ddl (SQLite): pysqlite must not run DDL outside a
    transaction, so it is told to leave transactions alone and each SQLAlchemy transaction
    starts with our own BEGIN IMMEDIATE; a migration then commits or rolls back whole.
    application_name (PostgreSQL) names the connections in pg_stat_activity."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
            if transactional_ddl:
                dbapi_conn.isolation_level = None  # no implicit BEGIN/COMMIT by pysqlite

        if transactional_ddl:
            @event.listens_for(engine, "begin")
            def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args = {}
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        if application_name:
            connect_args["application_name"] = application_name
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


class Database:
    def __init__(self, url: str, migrations: Path = MIGRATIONS,
                 application_name: Optional[str] = None):
        self.url = url
        self.migrations = migrations
        self.engine = make_engine(url, application_name=application_name)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        # (versions folder mtime, scripts, head revision)
        self._scripts: Optional[Tuple[int, ScriptDirectory, str]] = None
        self._integrity: Optional[Tuple[float, Optional[str]]] = None  # (when, problem)

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.url).get_backend_name() == "sqlite"

    @property
    def sqlite_path(self) -> Optional[Path]:
        """The SQLite database file, None for PostgreSQL or an in-memory database."""
        parsed = make_url(self.url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return None
        return Path(parsed.database)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back on any error."""
        s = self.sessionmaker()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    # --- migrations
    def _alembic_config(self, engine: Optional[Engine] = None) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.migrations))
        cfg.attributes["engine"] = engine or self.engine
        return cfg

    def _script_directory(self) -> Tuple[ScriptDirectory, str]:
        # parsing the migration scripts costs milliseconds and /healthz asks on every call:
        # keep the answer until the versions folder changes (a file added or removed)
        stamp = (self.migrations / "versions").stat().st_mtime_ns
        if self._scripts is None or self._scripts[0] != stamp:
            scripts = ScriptDirectory.from_config(self._alembic_config())
            head = scripts.get_current_head()
            assert head is not None
            self._scripts = (stamp, scripts, head)
        return self._scripts[1], self._scripts[2]

    def head_revision(self) -> str:
        return self._script_directory()[1]

    def knows_revision(self, revision: str) -> bool:
        """True when revision is one of this software's migrations."""
        try:
            return self._script_directory()[0].get_revision(revision) is not None
        except (CommandError, RevisionError):
            return False

    def unknown_revision_problem(self, revision: Optional[str]) -> Optional[str]:
        """One line when the database is at a revision this software does not know (written by
        a newer version, or by another branch), else None."""
        if revision is None or self.knows_revision(revision):
            return None
        return ("database %s is at schema revision %s, which this version of the workbench does "
                "not know (its newest is %s): the database was upgraded by a newer version; "
                "install that version again, or restore a backup taken before that upgrade with "
                "`cdsw db restore`" % (self.display_url, revision, self.head_revision()))

    def current_revision(self) -> Optional[str]:
        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except Exception as e:  # connection refused, bad credentials, ...
            raise DatabaseError("cannot connect to the database %s: %s"
                                % (self.display_url, _first_line(e)))

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def upgrade(self, revision: str = "head") -> None:
        """Apply the missing migrations, each in its own transaction. Refuses a database at a
        revision this software does not know; a failure says where the schema stayed."""
        before = self.current_revision()
        problem = self.unknown_revision_problem(before)
        if problem:
            raise DatabaseError(problem)
        engine = make_engine(self.url, transactional_ddl=True) if self.is_sqlite else self.engine
        try:
            command.upgrade(self._alembic_config(engine), revision)
        except Exception as e:
            try:
                stayed = self.current_revision() or "empty"
            except DatabaseError:
                stayed = "unknown"
            raise DatabaseError(
                "schema upgrade of %s from %s failed: %s; the database stays whole at revision %s "
                "(each revision is applied completely or not at all); %s and start again"
                % (self.display_url, before or "empty", _first_line(_root(e)), stayed,
                   _fix_hint(e, "fix the cause"))) from e
        finally:
            if engine is not self.engine:
                engine.dispose()

    def needs_upgrade(self) -> bool:
        return self.current_revision() != self.head_revision()

    def upgrade_with_backup(self, backups_dir: Path) -> Optional[Path]:
        """Move the schema to head; back up first unless the database is new. Returns the backup.
        A database newer than this software is refused before any backup is taken."""
        current = self.current_revision()
        if current == self.head_revision():
            return None
        problem = self.unknown_revision_problem(current)
        if problem:
            raise DatabaseError(problem)
        backup = None
        if current is not None:
            backup = self.backup(backups_dir, label="pre-upgrade-" + current)
            log.info("database backed up to %s before upgrade from %s", backup, current)
        self.upgrade()
        log.info("database schema at %s", self.head_revision())
        return backup

    # --- integrity
    def integrity_problem(self, max_age: float = INTEGRITY_CACHE_SECONDS) -> Optional[str]:
        """None when SQLite's `PRAGMA quick_check` passes (always None on PostgreSQL), else one
        line. The check reads the whole file, so its answer is reused for max_age seconds."""
        if self.sqlite_path is None:
            return None
        now = time.monotonic()
        if self._integrity is not None and now - self._integrity[0] < max_age:
            return self._integrity[1]
        problem: Optional[str] = None
        try:
            with self.engine.connect() as conn:
                rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
            if rows != ["ok"]:
                problem = "; ".join(str(r) for r in rows[:3])
        except Exception as e:  # a damaged header or page can make the check itself fail
            problem = _first_line(_root(e))
        if problem:
            problem = ("database file %s is damaged (%s); restore a backup with `cdsw db restore`"
                       % (self.sqlite_path, problem))
        self._integrity = (now, problem)
        return problem

    # --- backups
    def backup(self, backups_dir: Path, label: str = "manual") -> Path:
        """A consistent copy of the database in backups_dir: `.sqlite` (SQLite) or a plain
        pg_dump `.sql` (PostgreSQL). Written under a `.partial` name that never outlives a
        failure."""
        backups_dir.mkdir(parents=True, exist_ok=True)
        name = "cdsw-%s-%s" % (_stamp(), label)
        if self.is_sqlite:
            target = backups_dir / (name + ".sqlite")
            with _partial(target) as tmp:
                src = sqlite3.connect(str(self.sqlite_path))
                try:
                    dst = sqlite3.connect(str(tmp))
                    try:
                        with dst:
                            src.backup(dst)
                    finally:
                        dst.close()
                except sqlite3.Error as e:
                    raise DatabaseError("backup of %s to %s failed: %s; %s"
                                        % (self.display_url, backups_dir, e,
                                           _fix_hint(e, "check that directory"))) from e
                finally:
                    src.close()
            return target
        target = backups_dir / (name + ".sql")
        with _partial(target) as tmp:
            proc = subprocess.run(
                [pg_tool("pg_dump", "back up"), "--no-owner", "--format=plain", "-f", str(tmp)]
                + pg_connection_args(self.url), env=pg_env(self.url), capture_output=True,
                text=True)
            if proc.returncode != 0:
                raise DatabaseError("pg_dump failed: " + _first_line(proc.stderr))
        return target

    def backup_with_files(self, out_dir: Path, projects_dir: Path, label: str = "manual") -> Path:
        """One `.tar.gz` holding the database backup (`database.sqlite` or `database.sql`), the
        project files (`projects/`, symbolic links kept as links) and `manifest.json`."""
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / ("cdsw-%s-%s.tar.gz" % (_stamp(), label))
        revision = self.current_revision()
        with tempfile.TemporaryDirectory(prefix=".cdsw-backup-", dir=str(out_dir)) as work:
            db_file = self.backup(Path(work), label)
            manifest = Path(work) / "manifest.json"
            manifest.write_text(json.dumps({"format": 1, "revision": revision,
                                            "database": "sqlite" if self.is_sqlite else
                                            "postgresql", "created": _stamp()}) + "\n")
            with _partial(target) as tmp:
                try:
                    with tarfile.open(str(tmp), "w:gz", compresslevel=1) as tar:
                        tar.add(str(manifest), arcname="manifest.json")
                        tar.add(str(db_file), arcname="database" + db_file.suffix)
                        if projects_dir.is_dir():
                            tar.add(str(projects_dir), arcname="projects")
                except OSError as e:
                    raise DatabaseError("backup to %s failed: %s; %s"
                                        % (out_dir, e.strerror or e,
                                           _fix_hint(e, "check that directory"))) from e
        return target


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


@contextmanager
def _partial(target: Path) -> Iterator[Path]:
    """Write target under a `.partial` name; renamed when the block succeeds, removed if not."""
    tmp = target.with_name(target.name + ".partial")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pg_tool(name: str, purpose: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise DatabaseError("%s is not installed; install the PostgreSQL client "
                            "(apt-get install postgresql-client) to %s the database"
                            % (name, purpose))
    return found


def pg_connection_args(url: str) -> List[str]:
    """Host, port, user and database of a PostgreSQL URL as pg_dump/psql arguments."""
    parsed = make_url(url)
    args: List[str] = []
    if parsed.host:
        args += ["-h", parsed.host]
    if parsed.port:
        args += ["-p", str(parsed.port)]
    if parsed.username:
        args += ["-U", parsed.username]
    return args + [parsed.database or ""]


def pg_env(url: str) -> dict:
    """The environment for pg_dump/psql: the password goes through PGPASSWORD, never argv."""
    env = dict(os.environ)
    password = make_url(url).password
    if password:
        env["PGPASSWORD"] = str(password)
    return env


def _root(e: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrapper."""
    return getattr(e, "orig", None) or e


def is_disk_full(e: BaseException) -> bool:
    """SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100) or an OSError ENOSPC."""
    root = _root(e)
    if isinstance(root, OSError) and root.errno == errno.ENOSPC:
        return True
    if getattr(root, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    if getattr(root, "sqlstate", None) == "53100":
        return True
    text = str(root).lower()
    return "database or disk is full" in text or "no space left on device" in text


# what a failed database call means for the caller (see problem_kind)
DISK_FULL, UNAVAILABLE, DAMAGED = "disk_full", "unavailable", "damaged"
# PostgreSQL SQLSTATE classes and codes that mean "try again later": connection exceptions,
# insufficient resources, operator intervention (shutdown, restart, cannot connect now)
_PG_TRANSIENT_CLASSES = ("08", "53", "57")
_SQLITE_TRANSIENT = ("database is locked", "unable to open database file", "disk i/o error")


def problem_kind(e: BaseException) -> Optional[str]:
    """DISK_FULL, UNAVAILABLE (the database cannot be reached or is busy: retry later),
    DAMAGED (a corrupt SQLite file) or None (a bug or a bad query: not ours to explain)."""
    from sqlalchemy import exc as sa_exc

    if is_disk_full(e):
        return DISK_FULL
    if isinstance(e, sa_exc.TimeoutError):  # no connection free in the pool
        return UNAVAILABLE
    if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
        return UNAVAILABLE
    root = _root(e)
    if isinstance(root, sqlite3.Error):
        code = getattr(root, "sqlite_errorcode", None)
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return DAMAGED
        text = str(root).lower()
        if "malformed" in text or "not a database" in text:
            return DAMAGED
        if any(t in text for t in _SQLITE_TRANSIENT):
            return UNAVAILABLE
        return None
    sqlstate = getattr(root, "sqlstate", None)
    if sqlstate and sqlstate[:2] in _PG_TRANSIENT_CLASSES:
        return UNAVAILABLE
    if isinstance(e, sa_exc.OperationalError) and sqlstate is None \
            and type(root).__module__.startswith("psycopg"):
        return UNAVAILABLE  # psycopg's "connection failed", "server closed the connection"
    return None


def log_loop_failure(logger: logging.Logger, what: str, e: BaseException) -> None:
    """For a background loop's failed round: one line when the database is unreachable, full
    or damaged (the loop retries; /healthz and the API say the rest), else the traceback."""
    kind = problem_kind(e)
    if kind:
        logger.warning("%s: database %s: %s", what, kind.replace("_", " "), _first_line(_root(e)))
    else:
        logger.error("%s", what, exc_info=e)


def _fix_hint(e: BaseException, default: str) -> str:
    return "free space on the data volume" if is_disk_full(e) else default


def _first_line(e: object) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
