"""What a failed database call means (disk full, unavailable, damaged), how the API answers it,
and the master lock that keeps a restore and a master apart."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from cdsw_agent.server import errors
from cdsw_agent.store import lock
from cdsw_agent.store.db import (DAMAGED, DISK_FULL, UNAVAILABLE, Database, DatabaseError,
                                  log_loop_failure, problem_kind)


def wrapped(orig: BaseException, invalidated: bool = False) -> DBAPIError:
    return DBAPIError.instance("SELECT 1", {}, orig, psycopg.Error,
                               connection_invalidated=invalidated)


def real_sqlite_error(tmp_path: Path, setup: str, statement: str) -> sqlite3.Error:
    path = tmp_path / "x.db"
    if setup:
        path.write_bytes(setup.encode())
    try:
        c = sqlite3.connect(str(path))
        c.execute(statement)
    except sqlite3.Error as e:
        return e
    raise AssertionError("no error")


def test_problem_kinds_of_real_errors(tmp_path: Path) -> None:
    not_a_db = real_sqlite_error(tmp_path, "this is no database file" * 100, "SELECT * FROM t")
    assert problem_kind(wrapped(not_a_db)) == DAMAGED
    (tmp_path / "x.db").unlink()
    no_table = real_sqlite_error(tmp_path, "", "SELECT * FROM missing")
    assert problem_kind(wrapped(no_table)) is None  # a bug, not an outage
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    assert problem_kind(wrapped(full)) == DISK_FULL
    assert problem_kind(OSError(28, "No space left on device")) == DISK_FULL
    assert problem_kind(wrapped(sqlite3.OperationalError("database is locked"))) == UNAVAILABLE
    # PostgreSQL: connection failures, restarts, a full disk, a real bug
    assert problem_kind(wrapped(psycopg.OperationalError("connection failed: Connection refused"))) \
        == UNAVAILABLE
    assert problem_kind(wrapped(psycopg.errors.AdminShutdown("terminating connection"))) \
        == UNAVAILABLE
    assert problem_kind(wrapped(psycopg.errors.CannotConnectNow("the database system is "
                                                                "starting up"))) == UNAVAILABLE
    assert problem_kind(wrapped(psycopg.errors.DiskFull("could not extend file"))) == DISK_FULL
    assert problem_kind(wrapped(psycopg.errors.UndefinedTable("no such table"))) is None
    assert problem_kind(wrapped(psycopg.errors.SyntaxError("oops"), invalidated=True)) \
        == UNAVAILABLE
    assert problem_kind(PoolTimeoutError("QueuePool limit reached")) == UNAVAILABLE
    assert problem_kind(ValueError("nothing to do with a database")) is None


def _app(exc: BaseException) -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


def test_unreachable_database_answers_503_with_retry_after_and_one_log_line(caplog) -> None:
    errors._outage_log = errors._OutageLog()
    client = _app(OperationalError("SELECT 1", {}, psycopg.OperationalError(
        "connection failed: connection to server at \"127.0.0.1\", port 5432 failed: "
        "Connection refused")))
    caplog.set_level(logging.INFO)
    for _ in range(20):
        r = client.get("/boom")
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        assert r.json() == {"error": "the database is unavailable",
                            "detail": "try again in a few seconds"}
    lines = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert lines[0].getMessage().startswith("database unavailable on GET /boom: connection failed")


def test_disk_full_answers_507(caplog) -> None:
    errors._outage_log = errors._OutageLog()
    full = sqlite3.OperationalError("database or disk is full")
    for exc in (OperationalError("INSERT", {}, full), OSError(28, "No space left on device")):
        r = _app(exc).get("/boom")
        assert r.status_code == 507
        assert r.json()["error"] == "no space left on the data volume"
    assert not [rec for rec in caplog.records if rec.exc_info]


def test_other_errors_stay_500_with_their_traceback(caplog) -> None:
    r = _app(OSError(13, "Permission denied")).get("/boom")
    assert r.status_code == 500 and r.json()["error"] == "internal error"
    assert any(rec.exc_info for rec in caplog.records)


def test_master_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    data = str(tmp_path)
    assert lock.holder(data) is None
    code = ("import sys, time\nfrom cdsw_agent.store import lock\n"
            "lock.acquire(sys.argv[1], 'master'); print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, data], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert lock.holder(data) == "%d master" % proc.pid
        with pytest.raises(lock.LockBusy) as busy:
            lock.acquire(data, "restore")
        assert str(busy.value) == "%d master" % proc.pid
    finally:
        proc.kill()  # like kill -9: the kernel drops the lock
        proc.wait()
    assert lock.holder(data) is None
    lock.acquire(data, "restore")
    lock.acquire(data, "restore")  # idempotent within a process
    lock.release(data)
    assert lock.holder(data) is None


def test_unknown_revision_is_refused_before_anything_else(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "cdsw.db")
    db = Database(url)
    db.upgrade()
    with db.engine.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff0000'")
    assert not db.knows_revision("ffff0000") and db.knows_revision(db.head_revision())
    with pytest.raises(DatabaseError) as refused:
        db.upgrade_with_backup(tmp_path / "backups")
    assert "ffff0000, which this version of the workbench does not know" in str(refused.value)
    assert not (tmp_path / "backups").exists()
    db.engine.dispose()


def test_integrity_answer_is_cached(tmp_path: Path) -> None:
    db = Database("sqlite:///" + str(tmp_path / "cdsw.db"))
    db.upgrade()
    assert db.integrity_problem() is None
    calls = []
    engine = db.engine
    db.engine = create_engine("sqlite://")  # a different file: a new check would say ok too
    db.engine.connect = lambda: calls.append(1)  # type: ignore[assignment]
    assert db.integrity_problem() is None and calls == []  # answered from the cache
    db.engine = engine
    assert db.integrity_problem(max_age=0) is None
    engine.dispose()
    assert Database("postgresql://u@127.0.0.1:1/x").integrity_problem() is None  # SQLite only


def test_background_loops_log_an_outage_in_one_line(caplog) -> None:
    logger = logging.getLogger("cdsw_agent.test_loop")
    caplog.set_level(logging.INFO)
    down = OperationalError("SELECT 1", {}, psycopg.OperationalError("connection failed: refused"))
    log_loop_failure(logger, "model supervisor tick failed", down)
    log_loop_failure(logger, "model supervisor tick failed", KeyError("a bug"))
    first, second = caplog.records
    assert first.getMessage() == ("model supervisor tick failed: database unavailable: "
                                  "connection failed: refused") and first.exc_info is None
    assert second.getMessage() == "model supervisor tick failed" and second.exc_info


def test_a_connection_lost_after_the_answer_does_not_break_the_request(tmp_path: Path) -> None:
    """A write committed, then the database restarted: the per-request session's final rollback
    fails, yet the client gets its answer (the write is acknowledged and kept)."""
    from types import SimpleNamespace

    from fastapi import Depends
    from sqlalchemy.orm import Session

    from cdsw_agent.server.deps import get_db

    db = Database("sqlite:///" + str(tmp_path / "cdsw.db"))
    app = FastAPI()
    app.state.server = SimpleNamespace(db=db)
    errors.install(app)
    dead = OperationalError("ROLLBACK", {}, psycopg.OperationalError(
        "consuming input failed: server closed the connection unexpectedly"))
    invalidated = []

    @app.post("/write")
    def write(s: Session = Depends(get_db)) -> dict:
        s.execute(text("SELECT 1"))

        def rollback() -> None:
            raise dead

        s.rollback = rollback  # type: ignore[method-assign]
        s.invalidate = lambda: invalidated.append(1)  # type: ignore[method-assign]
        return {"saved": True}

    r = TestClient(app).post("/write")
    assert r.status_code == 200 and r.json() == {"saved": True}
    assert invalidated == [1]
    db.engine.dispose()


def test_archive_extraction_without_tar_filters(tmp_path, monkeypatch):
    """Debian bookworm's Python 3.11.2 has no extraction filters: the same rules by hand."""
    import io
    import os
    import tarfile

    import pytest

    from cdsw_agent.store import restore

    monkeypatch.delattr(tarfile, "tar_filter", raising=False)

    def archive(*members):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for info, data in members:
                t.addfile(info, io.BytesIO(data) if data is not None else None)
        buf.seek(0)
        return tarfile.open(fileobj=buf)

    def member(name, data=b"", mode=0o644, kind=tarfile.REGTYPE, link=""):
        i = tarfile.TarInfo(name)
        i.type, i.mode, i.linkname = kind, mode, link
        i.size = len(data) if kind == tarfile.REGTYPE else 0
        return i, (data if kind == tarfile.REGTYPE else None)

    ok = tmp_path / "ok"
    with archive(member("projects/a.txt", b"hi", mode=0o4755),
                 member("projects/l", kind=tarfile.SYMTYPE, link="/etc/passwd")) as t:
        restore._extract_safely(t, str(ok))
    assert (ok / "projects/a.txt").read_bytes() == b"hi"
    assert not os.stat(ok / "projects/a.txt").st_mode & 0o7000  # setuid dropped
    assert os.readlink(ok / "projects/l") == "/etc/passwd"  # the user's link kept as a link
    for bad in ([member("../evil")], [member("/abs")],
                [member("p/l", kind=tarfile.SYMTYPE, link="/tmp"), member("p/l/x", b"x")],
                [member("dev", kind=tarfile.CHRTYPE)]):
        with archive(*bad) as t, pytest.raises(tarfile.TarError):
            restore._extract_safely(t, str(tmp_path / "bad"))
    assert not (tmp_path / "evil").exists()
