"""Database engine, sessions, migrations and backups.

SQLite (WAL, foreign keys on) is the embedded default; PostgreSQL by URL. The
schema is only ever changed by Alembic migrations, and `upgrade_with_backup`
takes a backup before it moves the schema forward.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Tuple

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class DatabaseError(Exception):
    """A database problem with a one-line explanation for the admin."""


def make_engine(url: str) -> Engine:
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

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=True)


class Database:
    def __init__(self, url: str, migrations: Path = MIGRATIONS):
        self.url = url
        self.migrations = migrations
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._head: Optional[Tuple[int, str]] = None  # (versions folder mtime, head revision)

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
    def _alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.migrations))
        cfg.attributes["engine"] = self.engine
        return cfg

    def head_revision(self) -> str:
        # parsing the migration scripts costs milliseconds and /healthz asks on every call:
        # keep the answer until the versions folder changes (a file added or removed)
        stamp = (self.migrations / "versions").stat().st_mtime_ns
        if self._head is None or self._head[0] != stamp:
            head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
            assert head is not None
            self._head = (stamp, head)
        return self._head[1]

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
        command.upgrade(self._alembic_config(), revision)

    def needs_upgrade(self) -> bool:
        return self.current_revision() != self.head_revision()

    def upgrade_with_backup(self, backups_dir: Path) -> Optional[Path]:
        """Move the schema to head; back up first unless the database is new. Returns the backup."""
        current = self.current_revision()
        if current == self.head_revision():
            return None
        backup = None
        if current is not None:
            backup = self.backup(backups_dir, label="pre-upgrade-" + current)
            log.info("database backed up to %s before upgrade from %s", backup, current)
        self.upgrade()
        log.info("database schema at %s", self.head_revision())
        return backup

    # --- backups
    def backup(self, backups_dir: Path, label: str = "manual") -> Path:
        backups_dir.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            target = backups_dir / ("cdsw-%s-%s.sqlite" % (stamp, label))
            tmp = target.with_suffix(".partial")
            src = sqlite3.connect(parsed.database)
            try:
                dst = sqlite3.connect(str(tmp))
                with dst:
                    src.backup(dst)
                dst.close()
            finally:
                src.close()
            os.replace(tmp, target)
            return target
        target = backups_dir / ("cdsw-%s-%s.sql" % (stamp, label))
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            raise DatabaseError("pg_dump is not installed; install the PostgreSQL client "
                                "(apt-get install postgresql-client) to back up the database")
        env = dict(os.environ)
        if parsed.password:
            env["PGPASSWORD"] = parsed.password
        args = [pg_dump, "--no-owner", "--format=plain", "-f", str(target) + ".partial"]
        if parsed.host:
            args += ["-h", parsed.host]
        if parsed.port:
            args += ["-p", str(parsed.port)]
        if parsed.username:
            args += ["-U", parsed.username]
        args.append(parsed.database or "")
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            Path(str(target) + ".partial").unlink(missing_ok=True)
            raise DatabaseError("pg_dump failed: " + _first_line(proc.stderr))
        os.replace(str(target) + ".partial", target)
        return target


def _first_line(e: object) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
