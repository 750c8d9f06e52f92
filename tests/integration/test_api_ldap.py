"""LDAP sign-in through the API against a real slapd: provisioning, admin mapping, fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ..conftest import PASSWORD, build_api, make_settings
from .ldap_fixtures import *  # noqa: F401,F403  (pytest fixtures)
from .slapd import SlapdServer

pytestmark = pytest.mark.ldap


@pytest.fixture
def ldap_api(slapd_server: SlapdServer, tmp_path: Path, db_url: str):  # type: ignore[no-untyped-def]
    s = make_settings(tmp_path / "data", db_url=db_url, ldap_url=slapd_server.url,
                      ldap_bind_dn=slapd_server.bind_dn, ldap_bind_password=slapd_server.bind_password,
                      ldap_user_search_base=slapd_server.people_dn,
                      ldap_admin_group_dn=slapd_server.admin_group_dn)
    return build_api(s, db_url)


def signin(api, username: str, password: str):  # type: ignore[no-untyped-def]
    return TestClient(api.client.app).post("/api/v1/auth/signin",
                                           json={"username": username, "password": password})


def test_ldap_user_is_provisioned_with_directory_attributes(ldap_api, slapd_server) -> None:  # type: ignore[no-untyped-def]
    alice = slapd_server.users["alice"]
    r = signin(ldap_api, "alice", alice.password)
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert user["auth_source"] == "ldap" and user["email"] == "alice@cdsw.test"
    assert user["full_name"] == "Alice Liddell" and user["is_admin"] is True  # in cdsw-admins
    bob = slapd_server.users["bob"]
    r = signin(ldap_api, "bob", bob.password)
    assert r.status_code == 200 and r.json()["user"]["is_admin"] is False
    # second sign-in reuses the same account
    assert signin(ldap_api, "alice", alice.password).json()["user"]["id"] == user["id"]


def test_ldap_wrong_password_and_injection(ldap_api, slapd_server) -> None:  # type: ignore[no-untyped-def]
    assert signin(ldap_api, "alice", "wrong").status_code == 401
    assert signin(ldap_api, "*", slapd_server.users["alice"].password).status_code == 401
    assert signin(ldap_api, "alice)(uid=*", "x").status_code == 401


def test_ldap_password_cannot_be_changed_here(ldap_api, slapd_server) -> None:  # type: ignore[no-untyped-def]
    c = TestClient(ldap_api.client.app)
    r = c.post("/api/v1/auth/signin", json={"username": "bob", "password": slapd_server.users["bob"].password})
    c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    r = c.put("/api/v1/account/password", json={"current_password": "x", "new_password": "yyyyyyyyyyyy"})
    assert r.status_code == 400 and "LDAP" in r.json()["error"]


def test_local_accounts_still_work_and_are_not_shadowed(ldap_api) -> None:  # type: ignore[no-untyped-def]
    local = ldap_api.user("localonly")
    assert signin(ldap_api, "localonly", PASSWORD).status_code == 200
    # a local account named like a directory user keeps its local password only
    ldap_api.user("carol")
    assert signin(ldap_api, "carol", "carol-pw-3").status_code == 401
    assert local.auth_source == "local"


def test_directory_down_gives_clear_error(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "d", ldap_url="ldap://127.0.0.1:1",
                      ldap_user_search_base="ou=people,dc=cdsw,dc=test")
    api = build_api(s)
    r = signin(api, "alice", "whatever")
    assert r.status_code == 401 and "cannot be reached" in r.json()["error"]
