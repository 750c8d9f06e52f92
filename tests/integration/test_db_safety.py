"""No state lost to a fault: a full disk mid-upgrade, a restore over a leftover WAL, a newer
database, a corrupted page, a PostgreSQL restart under load.

Disk-full cases use a real small tmpfs (the tests run as root) filled with a file.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import inspect, text

from cdsw_agent.cli.main import cli
from cdsw_agent.health.registry import REGISTRY, Status
from cdsw_agent.store import lock
from cdsw_agent.store.db import MIGRATIONS, Database, DatabaseError
from cdsw_agent.store.models import User

from .. import pg
from ..conftest import build_api, make_settings
from .test_master_process import CDSW, env_for, free_port, start, stop, wait_for

PAGE = 4096


# --- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A 32 MiB tmpfs: small enough to fill in an instant."""
    mnt = Path(tempfile.mkdtemp(prefix="cdsw-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


def fill(volume: Path, leave: int = 0) -> Path:
    """Fill volume with one file, leaving about `leave` bytes free; returns the file."""
    filler = volume / "filler"
    fd = os.open(str(filler), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1024 * 1024, PAGE):  # big blocks, then the last pages one by one
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    if leave:
        os.truncate(str(filler), max(0, filler.stat().st_size - leave))
    return filler


def tables_by_revision() -> Dict[str, Set[str]]:
    """Which tables each migration creates, read from the migration scripts."""
    found: Dict[str, Set[str]] = {}
    for script in sorted((MIGRATIONS / "versions").glob("*.py")):
        source = script.read_text()
        rev = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", source, re.M)
        assert rev, script
        found[rev.group(1)] = set(re.findall(r"create_table\(\s*['\"](\w+)['\"]", source))
    return found


def revisions_in_order() -> List[str]:
    from alembic.script import ScriptDirectory
    return [r.revision for r in reversed(list(ScriptDirectory(str(MIGRATIONS)).walk_revisions()))]


def assert_schema_matches_revision(url: str) -> str:
    """The tables are exactly those of the recorded revision and the ones before it."""
    db = Database(url)
    try:
        current = db.current_revision()
        assert current is not None
        order = revisions_in_order()
        made = tables_by_revision()
        present = set(inspect(db.engine).get_table_names())
        applied = order[:order.index(current) + 1]
        for rev in order:
            if rev in applied:
                assert made[rev] <= present, "revision %s recorded, tables missing" % rev
            else:
                assert not made[rev] & present, \
                    "at %s, but tables of %s exist: %s" % (current, rev, made[rev] & present)
        with db.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        return current
    finally:
        db.engine.dispose()


def usernames(url: str) -> List[str]:
    db = Database(url)
    try:
        with db.engine.connect() as c:
            return sorted(r[0] for r in c.execute(text("SELECT username FROM users")))
    finally:
        db.engine.dispose()


def add_user(url: str, name: str) -> None:
    db = Database(url)
    try:
        with db.session() as s:
            s.add(User(username=name, password_hash="x"))
    finally:
        db.engine.dispose()


def master_env(tmp: Path, data: Path) -> Dict[str, str]:
    """A master of its own on loopback: its data dir and free ports."""
    return env_for(tmp, CDSW_DATA_DIR=str(data), CDSW_HTTP_PORT=str(free_port()),
                   CDSW_ENGINE_PORT=str(free_port()), CDSW_BIND_ADDRESS="127.0.0.1")


def healthz(env: Dict[str, str]) -> str:
    return "http://127.0.0.1:%s/healthz" % env["CDSW_HTTP_PORT"]


def cdsw(env: Dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(CDSW + list(args), env=env, capture_output=True, text=True,
                          timeout=timeout)


# --- 1. a full disk in the middle of an upgrade -----------------------------------------------

def test_upgrade_on_a_full_disk_stops_between_revisions(tmpfs: Path) -> None:
    url = "sqlite:///%s/cdsw.db" % tmpfs
    head = revisions_in_order()[-1]
    stopped_at = set()
    for free_pages in (8, 16, 24, 32, 48, 64):
        for f in tmpfs.iterdir():
            f.unlink()
        db = Database(url)
        db.upgrade("0002")
        db.engine.dispose()
        add_user(url, "keeper")
        filler = fill(tmpfs, leave=free_pages * PAGE)
        db = Database(url)
        try:
            db.upgrade()
            message = None  # enough room for the whole upgrade
        except DatabaseError as e:
            message = str(e)
        finally:
            db.engine.dispose()
        current = assert_schema_matches_revision(url)
        if message is None:
            assert current == head
        else:
            assert "\n" not in message and "database or disk is full" in message
            assert "free space on the data volume" in message
            assert "stays whole at revision %s" % current in message
            stopped_at.add(current)
        filler.unlink()
        # a normal upgrade once there is space again: no "table already exists"
        db = Database(url)
        db.upgrade()
        assert db.current_revision() == head
        db.engine.dispose()
        assert usernames(url) == ["keeper"]
    # the disk filled up inside 0002->0003 and, with more room, in a later revision
    assert "0002" in stopped_at and len(stopped_at) >= 2, stopped_at


def test_master_start_on_a_full_disk_then_after_freeing_space(tmpfs: Path, tmp_path: Path) -> None:
    data = tmpfs / "data"
    url = "sqlite:///%s/cdsw.db" % data
    db = Database(url)
    db.upgrade("0002")
    db.engine.dispose()
    add_user(url, "keeper")
    env = master_env(tmp_path, data)
    db_size = (data / "cdsw.db").stat().st_size
    upgrade_failed = False
    for extra_pages in (8, 16, 32):  # room for the backup, not for the whole upgrade
        filler = fill(tmpfs, leave=db_size + extra_pages * PAGE)
        r = cdsw(env, "role", "master", "start")
        filler.unlink()
        assert r.returncode == 1, r.stdout + r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("cdsw: error: ") and "free space on the data volume" in last, last
        assert "Traceback" not in r.stderr
        assert not list((data / "backups").glob("*.partial"))
        assert_schema_matches_revision(url)
        if "schema upgrade" in last:
            upgrade_failed = True
            assert len(list((data / "backups").glob("*pre-upgrade-0002*"))) >= 1
            break
    assert upgrade_failed, "the disk never filled during the upgrade itself"
    proc = start(["role", "master", "start"], env)
    try:
        answer = wait_for(healthz(env), proc)
        assert answer.status_code == 200 and answer.json()["checks"]["database"] == "ok"
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert assert_schema_matches_revision(url) == revisions_in_order()[-1]
    assert usernames(url) == ["keeper"]


# --- 2. restore -------------------------------------------------------------------------------

def _write_and_die(db_path: Path, sql: List[str]) -> None:
    """Another process commits sql in WAL mode and dies without checkpointing (like kill -9)."""
    code = ("import os, sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_autocheckpoint=0')\n"
            "for s in sys.argv[2:]: c.execute(s)\n"
            "c.commit(); os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(db_path)] + sql, check=True)


def test_sqlite_restore_round_trip_ignores_a_leftover_wal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = master_env(tmp_path, data)
    assert cdsw(env, "db", "upgrade").returncode == 0
    url = "sqlite:///%s/cdsw.db" % data
    add_user(url, "before")
    r = cdsw(env, "db", "backup", "--label", "nightly")
    assert r.returncode == 0, r.stderr
    backup = Path(r.stdout.strip())
    # after the backup: one user added, the other deleted, all of it only in the WAL
    _write_and_die(data / "cdsw.db", ["CREATE TEMP TABLE u AS SELECT * FROM users",
                                      "UPDATE u SET id = id + 1000, username = 'after'",
                                      "INSERT INTO users SELECT * FROM u",
                                      "DELETE FROM users WHERE username = 'before'"])
    wal = Path(str(data / "cdsw.db") + "-wal")
    assert wal.stat().st_size > 0
    # the trap: copying the backup over cdsw.db replays the newer WAL over it
    naive = tmp_path / "naive"
    naive.mkdir()
    shutil.copy(backup, naive / "cdsw.db")
    shutil.copy(wal, naive / "cdsw.db-wal")
    assert usernames("sqlite:///%s/cdsw.db" % naive) == ["after"]

    # refused while the master runs
    proc = start(["role", "master", "start"], env)
    try:
        wait_for(healthz(env), proc)
        r = cdsw(env, "db", "restore", str(backup))
        assert r.returncode == 1
        assert r.stderr.startswith("cdsw: error: the master is running (pid ")
        assert "stop the CDSW_MASTER role" in r.stderr and len(r.stderr.splitlines()) == 1
    finally:
        stop(proc)
    assert usernames(url) == ["after"]  # untouched by the refused restore

    _write_and_die(data / "cdsw.db", ["DELETE FROM projects"])  # leave a WAL behind again
    assert wal.exists() and wal.stat().st_size > 0
    r = cdsw(env, "db", "restore", str(backup))
    assert r.returncode == 0, r.stderr
    assert "restored database sqlite:///%s/cdsw.db from %s" % (data, backup) in r.stdout
    assert usernames(url) == ["before"]
    kept = [p for p in data.glob("cdsw.db.replaced-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1 and str(kept[0]) in r.stdout
    assert usernames("sqlite:///%s" % kept[0]) == ["after"]  # nothing lost: kept aside
    # and the master starts on the restored database
    proc = start(["role", "master", "start"], env)
    try:
        answer = wait_for(healthz(env), proc)
        assert answer.status_code == 200, answer.text
    finally:
        stop(proc)
    assert usernames(url) == ["before"]


def test_restore_refuses_bad_backups(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CDSW_DATA_DIR": str(data)}
    run = CliRunner().invoke
    assert run(cli, ["db", "upgrade"], env=env).exit_code == 0
    url = "sqlite:///%s/cdsw.db" % data
    add_user(url, "stays")
    r = run(cli, ["db", "restore", str(tmp_path / "nope.sqlite")], env=env)
    assert r.exit_code == 1 and "no backup file" in r.output
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    r = run(cli, ["db", "restore", str(junk)], env=env)
    assert r.exit_code == 1 and "is a PostgreSQL dump but the database" not in r.output
    assert "cannot read backup" in r.output or "not a workbench" in r.output, r.output
    newer = Path(run(cli, ["db", "backup"], env=env).output.strip())
    with sqlite3.connect(str(newer)) as c:
        c.execute("UPDATE alembic_version SET version_num = 'ffff0000'")
    r = run(cli, ["db", "restore", str(newer)], env=env)
    assert r.exit_code == 1 and "schema revision ffff0000" in r.output
    assert "restore it with the version that made it" in r.output
    assert usernames(url) == ["stays"]
    assert not list(data.glob("cdsw.db.replaced-*")) and not list(data.glob(".cdsw.db.restoring*"))


def test_postgres_restore_round_trip(postgres: pg.PostgresServer, tmp_path: Path) -> None:
    url = postgres.url(postgres.new_database())
    env = {"CDSW_DATA_DIR": str(tmp_path / "data"), "CDSW_DB_URL": url}
    run = CliRunner().invoke
    assert run(cli, ["db", "upgrade"], env=env).exit_code == 0
    add_user(url, "before")
    r = run(cli, ["db", "backup"], env=env)
    assert r.exit_code == 0, r.output
    backup = Path(r.output.strip())
    add_user(url, "after")
    db = Database(url)
    with db.session() as s:
        s.execute(text("DELETE FROM users WHERE username = 'before'"))
    # a master connected to the database (from any host) makes restore refuse
    master = Database(url, application_name=lock.MASTER_APPLICATION_NAME)
    with master.engine.connect() as held:
        held.execute(text("SELECT 1"))
        r = run(cli, ["db", "restore", str(backup)], env=env)
        assert r.exit_code == 1 and "a master is connected to" in r.output, r.output
        assert pg.PASSWORD not in r.output
    master.engine.dispose()
    r = run(cli, ["db", "restore", str(backup)], env=env)
    assert r.exit_code == 0, r.output
    assert "restored database" in r.output and pg.PASSWORD not in r.output
    assert usernames(url) == ["before"]
    kept = Path(r.output.split("backed up to ")[1].split()[0])
    assert "'after'" in kept.read_text() or "\tafter\t" in kept.read_text()
    # the restored database is complete: same schema revision, sequences work
    assert db.current_revision() == db.head_revision()
    add_user(url, "new")
    assert usernames(url) == ["before", "new"]
    # a SQLite backup is refused for PostgreSQL, and nothing changes
    sqlite_file = tmp_path / "x.sqlite"
    sqlite3.connect(str(sqlite_file)).execute("CREATE TABLE t (x)").connection.close()
    r = run(cli, ["db", "restore", str(sqlite_file)], env=env)
    assert r.exit_code == 1 and "is a SQLite file but the database" in r.output
    assert usernames(url) == ["before", "new"]
    # an archive with project files holds the dump too
    project = tmp_path / "data" / "projects" / "3"
    project.mkdir(parents=True)
    (project / "a.py").write_text("1\n")
    r = run(cli, ["db", "backup", "--with-files", "--out", str(tmp_path / "offsite")], env=env)
    assert r.exit_code == 0, r.output
    archive = Path(r.output.strip())
    with tarfile.open(str(archive)) as tar:
        assert {"database.sql", "projects/3/a.py"} <= set(tar.getnames())
    add_user(url, "later")
    (project / "a.py").write_text("2\n")
    r = run(cli, ["db", "restore", str(archive)], env=env)
    assert r.exit_code == 0, r.output
    assert usernames(url) == ["before", "new"] and (project / "a.py").read_text() == "1\n"
    db.engine.dispose()


# --- 3. backups with project files ------------------------------------------------------------

def test_backup_with_files_and_restore(tmp_path: Path, tmpfs: Path) -> None:
    data = tmp_path / "data"
    env = {"CDSW_DATA_DIR": str(data)}
    run = CliRunner().invoke
    assert run(cli, ["db", "upgrade"], env=env).exit_code == 0
    url = "sqlite:///%s/cdsw.db" % data
    add_user(url, "before")
    project = data / "projects" / "7"
    project.mkdir(parents=True)
    (project / "analysis.py").write_text("print(1)\n")
    os.symlink("analysis.py", str(project / "link.py"))
    out = tmp_path / "offsite"
    r = run(cli, ["db", "backup", "--with-files", "--out", str(out), "--label", "full"], env=env)
    assert r.exit_code == 0, r.output
    archive = Path(r.output.strip())
    assert archive.parent == out and archive.name.endswith("-full.tar.gz")
    assert [p.name for p in out.iterdir()] == [archive.name]
    with tarfile.open(str(archive)) as tar:
        names = set(tar.getnames())
        assert {"manifest.json", "database.sqlite", "projects/7/analysis.py"} <= names
        assert tar.getmember("projects/7/link.py").issym()
    # later: the file changes, a user is added
    (project / "analysis.py").write_text("print(2)\n")
    (project / "new.py").write_text("x")
    add_user(url, "after")
    r = run(cli, ["db", "restore", str(archive)], env=env)
    assert r.exit_code == 0, r.output
    assert usernames(url) == ["before"]
    assert (project / "analysis.py").read_text() == "print(1)\n"
    assert not (project / "new.py").exists() and os.readlink(str(project / "link.py")) == "analysis.py"
    replaced = list(data.glob("projects.replaced-*"))
    assert len(replaced) == 1 and (replaced[0] / "7" / "new.py").exists()
    assert "restored project files into %s" % (data / "projects") in r.output
    assert not list(data.glob(".cdsw-restore-*"))

    # a backup that fails (no space where it goes) leaves nothing behind
    filler = fill(tmpfs)
    (project / "big.bin").write_bytes(os.urandom(256 * 1024))
    for args in (["db", "backup", "--out", str(tmpfs / "b")],
                 ["db", "backup", "--with-files", "--out", str(tmpfs / "b")]):
        (tmpfs / "b").mkdir(exist_ok=True)
        r = run(cli, args, env=env)
        assert r.exit_code == 1, r.output
        assert r.output.startswith("cdsw: error: backup") and "free space on the data volume" in r.output
        assert len(r.output.strip().splitlines()) == 1
        assert list((tmpfs / "b").iterdir()) == []
    filler.unlink()


# --- 4. a database newer than the software ----------------------------------------------------

def test_newer_database_refused_in_one_line_without_backup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = master_env(tmp_path, data)
    assert cdsw(env, "db", "upgrade").returncode == 0
    with sqlite3.connect(str(data / "cdsw.db")) as c:
        c.execute("UPDATE alembic_version SET version_num = 'ffff0000'")
    backups = data / "backups"
    before = sorted(backups.glob("*")) if backups.exists() else []
    for args in (["db", "upgrade"], ["role", "master", "start"], ["role", "master", "start"]):
        r = cdsw(env, *args)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("cdsw: error: database sqlite:///")
        assert "is at schema revision ffff0000, which this version of the workbench does not know" \
            in last and "install that version again" in last
        assert (sorted(backups.glob("*")) if backups.exists() else []) == before  # no backup
    r = cdsw(env, "db", "current")
    assert r.returncode == 0
    assert r.stdout.startswith("ffff0000 (newer than this version of the workbench")
    assert "upgrade" not in r.stdout.replace("upgraded it", "")


# --- 5 and 6. health and answers: a corrupt page, a full disk ---------------------------------

def _corrupt_table_page(db_file: Path, table: str) -> None:
    with sqlite3.connect(str(db_file)) as c:
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    c.close()
    assert not Path(str(db_file) + "-wal").exists() or Path(str(db_file) + "-wal").stat().st_size == 0
    with open(str(db_file), "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 64)  # the b-tree page header and cell pointers: garbage


def test_corrupted_page_makes_healthz_fail_with_a_clear_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    api = build_api(settings)
    admin = api.user("boss", admin=True)
    assert admin.id
    r = api.client.get("/healthz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "storage": "ok"}
    api.db.engine.dispose()  # last connection closed: WAL checkpointed and removed
    _corrupt_table_page(Path(settings.data_dir) / "cdsw.db", "users")
    api.db._integrity = None  # the cached answer is from before the damage
    r = api.client.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    assert "is damaged" in r.json()["checks"]["database"]
    assert "cdsw db restore" in r.json()["checks"]["database"]
    r = api.client.post("/api/v1/auth/signin", json={"username": "boss", "password": "x" * 12})
    assert r.status_code == 500
    assert r.json() == {"error": "the database is damaged",
                        "detail": "the administrator must restore a backup (`cdsw db restore`)"}
    outcome = REGISTRY.run(settings, names=["database"])[0]
    assert outcome.status == Status.CRITICAL and "is damaged" in outcome.message
    api.db.engine.dispose()


def test_full_disk_gives_507_and_healthz_says_so(tmpfs: Path) -> None:
    settings = make_settings(tmpfs / "data")
    api = build_api(settings)
    boss = api.user("boss", admin=True)
    client = api.key_client(boss)
    r = client.post("/api/v1/projects", json={"name": "first"})
    assert r.status_code == 201, r.text
    with api.db.engine.connect() as c:  # the WAL must grow for the next write
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = fill(tmpfs)
    try:
        r = api.client.get("/healthz")
        assert r.status_code == 503
        assert r.json()["checks"]["storage"].startswith("no space left on the data volume")
        for attempt in range(3):
            r = client.post("/api/v1/projects", json={"name": "second-%d" % attempt})
            assert r.status_code == 507, r.text
            assert r.json()["error"] == "no space left on the data volume"
    finally:
        filler.unlink()
    assert api.client.get("/healthz").status_code == 200
    r = client.post("/api/v1/projects", json={"name": "third"})
    assert r.status_code == 201, r.text
    names = [p["name"] for p in client.get("/api/v1/projects").json()]
    assert "first" in names and "third" in names and not any(n.startswith("second") for n in names)
    api.db.engine.dispose()


# --- 6. PostgreSQL restarted under load -------------------------------------------------------

def test_postgres_restart_under_load_loses_no_acknowledged_write(tmp_path: Path, caplog) -> None:
    server = pg.start()
    try:
        url = server.url(server.new_database())
        settings = make_settings(tmp_path / "data", db_url=url)
        api = build_api(settings, url)
        boss = api.user("boss", admin=True)
        client = api.key_client(boss)
        acknowledged: List[str] = []
        unavailable: List[requests.Response] = []
        unexpected: List[str] = []
        stop_writing = threading.Event()

        def write() -> None:
            n = 0
            while not stop_writing.is_set():
                n += 1
                name = "p%d" % n
                r = client.post("/api/v1/projects", json={"name": name})
                if 200 <= r.status_code < 300:
                    acknowledged.append(name)
                elif r.status_code == 503 and r.headers.get("Retry-After") == "5" \
                        and r.json()["error"] == "the database is unavailable":
                    unavailable.append(r)
                    time.sleep(0.05)
                else:
                    unexpected.append("%s %s: %s" % (name, r.status_code, r.text[:200]))

        writer = threading.Thread(target=write)
        caplog.set_level("WARNING")
        with api.client:  # the lifespan runs the job scheduler, which meets the outage too
            writer.start()
            try:
                time.sleep(1.0)
                server.restart(down_seconds=5.0)
                time.sleep(2.0)
            finally:
                stop_writing.set()
                writer.join(timeout=60)
        assert not unexpected, unexpected[:5]
        assert unavailable, "no request saw the outage"
        assert len(acknowledged) > 5
        with api.db.engine.connect() as c:
            stored = {r[0] for r in c.execute(text("SELECT name FROM projects"))}
        assert set(acknowledged) <= stored
        # a few lines for the whole outage, no tracebacks
        outage = [rec for rec in caplog.records if rec.name == "cdsw_agent.server.errors"]
        assert outage and all(rec.exc_info is None for rec in outage)
        assert len(outage) <= 2, [rec.getMessage() for rec in outage]  # one per 10 s at most
        assert all(rec.getMessage().startswith("database unavailable on ") for rec in outage)
        ticks = [rec for rec in caplog.records if rec.name == "cdsw_agent.server.scheduler"]
        assert ticks and all(rec.getMessage().startswith(
            "job scheduler tick failed: database unavailable: ")
                             for rec in ticks), [rec.getMessage() for rec in ticks]
        # the other loops (model supervisor, session monitor) too: one line a round, no traceback
        assert not [rec.getMessage() for rec in caplog.records if rec.exc_info]
        api.db.engine.dispose()
    finally:
        server.stop()
