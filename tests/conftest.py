"""Shared fixtures: settings in a temporary data dir, the API on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
from fastapi.testclient import TestClient

from cdsw_agent.security import tokens
from cdsw_agent.security.passwords import Passwords
from cdsw_agent.settings import Settings, load_settings
from cdsw_agent.store.db import Database
from cdsw_agent.store.models import ApiKey, User, utcnow

from . import pg

PASSWORD = "correct-horse-42"
# The storage health check compares the data directory's free share with thresholds; on a shared
# test machine that share moves with other people's work (4-16 % of this one's disk in a day).
# Tests that are not about it use 0, so only a full disk counts, in this process and in every
# `cdsw` subprocess that inherits the environment; the tests of the thresholds set their own.
NO_FREE_SPACE_THRESHOLDS = {"CDSW_STORAGE_FREE_WARNING_PERCENT": "0",
                            "CDSW_STORAGE_FREE_CRITICAL_PERCENT": "0"}
for _name, _value in NO_FREE_SPACE_THRESHOLDS.items():
    os.environ.setdefault(_name, _value)
_counter = itertools.count(1)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings that read no system files, with cheap password hashing for speed."""
    base: Dict[str, Any] = dict(data_dir=str(data_dir), argon2_time_cost=1, argon2_memory_kib=1024,
                                allowed_git_schemes=["file", "https"], orchestrator="local",
                                storage_free_warning_percent=0, storage_free_critical_percent=0)
    base.update(overrides)
    return load_settings(conf_path=None, properties_path=None, environ={}, overrides=base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


# --- PostgreSQL ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.PostgresServer]:
    try:
        server = pg.start()
    except (RuntimeError, FileNotFoundError) as e:
        pytest.skip("PostgreSQL cannot run here: %s" % e)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "data" / "cdsw.db")
    server = request.getfixturevalue("postgres")
    return server.url(server.new_database())


# --- the API ------------------------------------------------------------------------------

@dataclass
class Api:
    """A running app with helpers to make users and sign them in."""
    client: TestClient
    settings: Settings
    db: Database
    passwords: Passwords = field(init=False)

    def __post_init__(self) -> None:
        self.passwords = Passwords(self.settings.argon2_time_cost, self.settings.argon2_memory_kib)

    def user(self, username: Optional[str] = None, admin: bool = False, password: str = PASSWORD) -> User:
        username = username or "user%d" % next(_counter)
        with self.db.session() as s:
            u = User(username=username, password_hash=self.passwords.hash(password), is_admin=admin,
                     email=username + "@example.com", full_name=username.title())
            s.add(u)
        return u

    def client_for(self, user: Optional[User], password: str = PASSWORD) -> TestClient:
        """A separate client (own cookie jar) signed in as user, sending its CSRF token."""
        c = TestClient(self.client.app)
        if user is not None:
            r = c.post("/api/v1/auth/signin", json={"username": user.username, "password": password})
            assert r.status_code == 200, r.text
            c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c

    def api_key(self, user: User, scope: str = "write") -> str:
        key = tokens.new_token(tokens.API_KEY_PREFIX)
        import datetime as dt
        with self.db.session() as s:
            s.add(ApiKey(user_id=user.id, name="k%d" % next(_counter), prefix=key[:12],
                         key_hash=tokens.digest(key), scope=scope,
                         expires_at=utcnow() + dt.timedelta(days=1)))
        return key

    def key_client(self, user: User, scope: str = "write") -> TestClient:
        c = TestClient(self.client.app)
        c.headers["Authorization"] = "Bearer " + self.api_key(user, scope)
        return c


def build_api(settings: Settings, url: Optional[str] = None) -> Api:
    from cdsw_agent.server.app import create_app

    db = Database(url or settings.database_url)
    db.upgrade()
    app = create_app(settings, db)
    return Api(TestClient(app), settings, db)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    a = build_api(settings)
    yield a
    a.db.engine.dispose()


@pytest.fixture
def any_api(settings: Settings, db_url: str) -> Iterator[Api]:
    """The API on SQLite and on a real PostgreSQL."""
    a = build_api(settings.with_overrides(db_url=db_url), db_url)
    yield a
    a.db.engine.dispose()
