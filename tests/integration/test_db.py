"""The database on SQLite and PostgreSQL: migrations, automatic backup before upgrade, CLI."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import inspect, select, text

from cdsw_agent.cli.main import cli
from cdsw_agent.store.db import MIGRATIONS, Database
from cdsw_agent.store.models import User

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()  # the newest revision

NEXT_REVISION = '''
"""test-only: a later schema version"""
from alembic import op
import sqlalchemy as sa

revision = "9999"
down_revision = "%s"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as b:
        b.add_column(sa.Column("nickname", sa.String(32), nullable=True))


def downgrade():
    with op.batch_alter_table("users") as b:
        b.drop_column("nickname")
'''


def test_upgrade_from_empty_creates_schema(db_url: str) -> None:
    db = Database(db_url)
    assert db.current_revision() is None and db.needs_upgrade()
    assert db.upgrade_with_backup(Path("/nonexistent-backups")) is None  # nothing to back up
    assert db.current_revision() == db.head_revision() == HEAD
    tables = set(inspect(db.engine).get_table_names())
    assert {"users", "projects", "teams", "collaborators", "api_keys", "audit_events"} <= tables


def test_upgrade_backs_up_first_and_keeps_data(db_url: str, tmp_path: Path) -> None:
    Database(db_url).upgrade()
    with Database(db_url).session() as s:
        s.add(User(username="keeper", password_hash="x"))
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    (migrations / "versions" / "9999_next.py").write_text(NEXT_REVISION % HEAD)
    db = Database(db_url, migrations)
    assert db.needs_upgrade()
    backup = db.upgrade_with_backup(tmp_path / "backups")
    assert backup is not None and backup.exists() and "pre-upgrade-" + HEAD in backup.name
    assert db.current_revision() == "9999"
    with db.engine.connect() as c:
        assert c.execute(text("SELECT username, nickname FROM users")).all() == [("keeper", None)]
    if db_url.startswith("sqlite"):
        with sqlite3.connect(str(backup)) as b:
            assert b.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)
            assert b.execute("SELECT username FROM users").fetchall() == [("keeper",)]
    else:
        dump = backup.read_text()
        assert "keeper" in dump and "CREATE TABLE public.users" in dump


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    db = Database("sqlite:///" + str(tmp_path / "x.db"))
    db.upgrade()
    with db.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_cli_db_and_admin_commands(db_url: str, tmp_path: Path) -> None:
    env = {"CDSW_DATA_DIR": str(tmp_path / "data"), "CDSW_DB_URL": db_url,
           "CDSW_ARGON2_TIME_COST": "1", "CDSW_ARGON2_MEMORY_KIB": "1024"}
    run = CliRunner().invoke
    r = run(cli, ["db", "current"], env=env)
    assert r.exit_code == 0 and "empty (needs `cdsw db upgrade`" in r.output
    r = run(cli, ["admin", "create-user", "boss", "--admin", "--password-stdin"], env=env, input="x" * 12 + "\n")
    assert r.exit_code == 1 and "cdsw db upgrade" in r.output
    r = run(cli, ["db", "upgrade"], env=env)
    assert r.exit_code == 0 and "upgraded from empty to " + HEAD in r.output
    if "@" in db_url:
        assert "pg-test-Secret-42" not in r.output and "***" in r.output
    r = run(cli, ["db", "current"], env=env)
    assert r.output.strip() == HEAD + " (up to date)"
    r = run(cli, ["admin", "create-user", "boss", "--admin", "--password-stdin"], env=env, input="short\n")
    assert r.exit_code == 1 and "at least 10 characters" in r.output
    r = run(cli, ["admin", "create-user", "boss", "--admin", "--generate-password"], env=env)
    assert r.exit_code == 0 and "created administrator boss" in r.output
    password = r.output.split("password: ")[1].strip()
    r = run(cli, ["admin", "create-user", "boss", "--password-stdin"], env=env, input="y" * 12 + "\n")
    assert r.exit_code == 1 and "already taken" in r.output
    with Database(db_url).session() as s:
        boss = s.scalar(select(User).where(User.username == "boss"))
        assert boss.is_admin and boss.password_hash.startswith("$argon2id$") and password not in boss.password_hash
    r = run(cli, ["db", "backup", "--label", "nightly"], env=env)
    assert r.exit_code == 0, r.output
    assert Path(r.output.strip()).exists() and "nightly" in r.output


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["db", "current"],
                           env={"CDSW_DB_URL": "postgresql://u:topsecret@127.0.0.1:1/x"})
    assert r.exit_code == 1
    assert r.output.startswith("cdsw: error: cannot connect to the database")
    assert "topsecret" not in r.output
