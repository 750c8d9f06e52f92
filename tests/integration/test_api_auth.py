"""Accounts through the API: sign-in, cookies, CSRF, lockout, passwords, API keys, audit."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from cdsw_agent.store.models import ApiKey, AuditEvent, User

from ..conftest import PASSWORD, Api, build_api


def audit_actions(api: Api) -> list:
    with api.db.session() as s:
        return [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def test_signin_sets_secure_cookie_and_me(any_api: Api) -> None:
    u = any_api.user()
    c = TestClient(any_api.client.app)
    r = c.post("/api/v1/auth/signin", json={"username": u.username.upper(), "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert "cdsw_session=" in cookie
    me = c.get("/api/v1/auth/me").json()
    assert me["user"]["username"] == u.username and me["via"] == "session"
    assert me["csrf_token"] == r.json()["csrf_token"]
    assert "signin" in audit_actions(any_api)


def test_cookie_is_secure_under_tls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ..conftest import make_settings

    cert = tmp_path / "c.pem"
    cert.write_text("x")
    s = make_settings(tmp_path / "d", tls_enable=True, tls_cert=str(cert), tls_key=str(cert))
    api = build_api(s)
    u = api.user()
    r = api.client.post("/api/v1/auth/signin", json={"username": u.username, "password": PASSWORD})
    assert "Secure" in r.headers["set-cookie"]


def test_wrong_password_is_generic_and_audited(any_api: Api) -> None:
    u = any_api.user()
    r1 = any_api.client.post("/api/v1/auth/signin", json={"username": u.username, "password": "nope"})
    r2 = any_api.client.post("/api/v1/auth/signin", json={"username": "nobody", "password": "nope"})
    assert r1.status_code == r2.status_code == 401
    assert r1.json()["error"] == r2.json()["error"] == "invalid username or password"
    assert audit_actions(any_api).count("signin.failure") == 2


def test_lockout_after_repeated_failures(any_api: Api) -> None:
    u = any_api.user()
    for _ in range(any_api.settings.login_max_failures):
        any_api.client.post("/api/v1/auth/signin", json={"username": u.username, "password": "bad"})
    r = any_api.client.post("/api/v1/auth/signin", json={"username": u.username, "password": PASSWORD})
    assert r.status_code == 429 and "too many failed sign-ins" in r.json()["error"]
    assert int(r.headers["Retry-After"]) > 0
    # an administrator (from another address) unlocks it
    admin = any_api.user(admin=True)
    a = any_api.client_for(admin)
    assert a.get("/api/v1/users/%d/details" % u.id).json()["locked"] is True
    assert a.patch("/api/v1/users/%d" % u.id, json={"unlock": True}).status_code == 200
    assert any_api.client_for(u).get("/api/v1/account").status_code == 200


def test_csrf_required_for_cookie_writes(api: Api) -> None:
    u = api.user()
    c = api.client_for(u)
    token = c.headers.pop("X-CSRF-Token")
    r = c.post("/api/v1/teams", json={"name": "t-csrf"})
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"]
    c.headers["X-CSRF-Token"] = "wrong"
    assert c.post("/api/v1/teams", json={"name": "t-csrf"}).status_code == 403
    c.headers["X-CSRF-Token"] = token
    assert c.post("/api/v1/teams", json={"name": "t-csrf"}).status_code == 201


def test_signout_ends_the_session(api: Api) -> None:
    c = api.client_for(api.user())
    cookie = c.cookies.get("cdsw_session")
    assert c.post("/api/v1/auth/signout").status_code == 204
    other = TestClient(api.client.app)
    other.cookies.set("cdsw_session", cookie)
    assert other.get("/api/v1/account").status_code == 401


def test_password_change(any_api: Api) -> None:
    u = any_api.user()
    c = any_api.client_for(u)
    r = c.put("/api/v1/account/password", json={"current_password": "bad", "new_password": "another-good-one"})
    assert r.status_code == 403
    r = c.put("/api/v1/account/password", json={"current_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 422 and "at least" in r.json()["error"]
    r = c.put("/api/v1/account/password", json={"current_password": PASSWORD, "new_password": "another-good-one"})
    assert r.status_code == 204
    assert c.get("/api/v1/account").status_code == 200  # this browser stays signed in
    bad = any_api.client.post("/api/v1/auth/signin", json={"username": u.username, "password": PASSWORD})
    assert bad.status_code == 401
    any_api.client_for(u, password="another-good-one")


def test_signup_off_by_default_then_on(api: Api) -> None:
    body = {"username": "newbie", "password": "long-enough-pass"}
    assert api.client.post("/api/v1/auth/signup", json=body).status_code == 403
    admin = api.client_for(api.user(admin=True))
    assert admin.patch("/api/v1/admin/settings", json={"values": {"signup_enabled": True}}).status_code == 200
    r = TestClient(api.client.app).post("/api/v1/auth/signup", json=body)
    assert r.status_code == 201 and r.json()["user"]["is_admin"] is False
    assert TestClient(api.client.app).post("/api/v1/auth/signup", json=body).status_code == 409


def test_api_keys_lifecycle(any_api: Api) -> None:
    u = any_api.user()
    c = any_api.client_for(u)
    r = c.post("/api/v1/account/api-keys", json={"name": "laptop", "scope": "write", "expires_in_days": 30})
    assert r.status_code == 201
    key = r.json()["key"]
    assert key.startswith("cdswk_")
    assert c.post("/api/v1/account/api-keys", json={"name": "laptop"}).status_code == 409
    listed = c.get("/api/v1/account/api-keys").json()
    assert [k["name"] for k in listed] == ["laptop"] and "key" not in listed[0]
    with any_api.db.session() as s:  # only the digest is stored
        row = s.scalar(select(ApiKey).where(ApiKey.name == "laptop"))
        assert row.key_hash != key and key not in row.key_hash
    bearer = TestClient(any_api.client.app, headers={"Authorization": "Bearer " + key})
    assert bearer.get("/api/v1/account").json()["username"] == u.username
    assert bearer.post("/api/v1/teams", json={"name": "by-key"}).status_code == 201  # no CSRF for keys
    assert c.delete("/api/v1/account/api-keys/%d" % listed[0]["id"]).status_code == 204
    r = bearer.get("/api/v1/account")
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    assert {"apikey.create", "apikey.revoke"} <= set(audit_actions(any_api))


def test_read_scoped_and_expired_keys(api: Api) -> None:
    u = api.user()
    reader = api.key_client(u, scope="read")
    assert reader.get("/api/v1/projects").status_code == 200
    r = reader.post("/api/v1/teams", json={"name": "nope"})
    assert r.status_code == 403 and "read scope" in r.json()["error"]
    writer = api.key_client(u)
    with api.db.session() as s:
        s.execute(update(ApiKey).values(expires_at=dt.datetime(2000, 1, 1)))
    assert writer.get("/api/v1/account").status_code == 401
    bad = TestClient(api.client.app, headers={"Authorization": "Basic abc"})
    assert bad.get("/api/v1/account").status_code == 401


def test_key_lifetime_is_bounded(api: Api) -> None:
    c = api.client_for(api.user())
    r = c.post("/api/v1/account/api-keys", json={"name": "forever", "expires_in_days": 3650})
    assert r.status_code == 422 and "expires_in_days" in r.json()["error"]


def test_disabled_user_cannot_sign_in(api: Api) -> None:
    u = api.user()
    keyed = api.key_client(u)
    admin = api.client_for(api.user(admin=True))
    assert admin.patch("/api/v1/users/%d" % u.id, json={"is_active": False}).status_code == 200
    assert api.client.post("/api/v1/auth/signin", json={"username": u.username, "password": PASSWORD}).status_code == 401
    assert keyed.get("/api/v1/account").status_code == 401


def test_admin_creates_users_and_cannot_demote_self(any_api: Api) -> None:
    admin_user = any_api.user(admin=True)
    admin = any_api.client_for(admin_user)
    r = admin.post("/api/v1/users", json={"username": "bad name!", "password": "carols-password"})
    assert r.status_code == 422 and "lowercase" in r.json()["error"]
    r = admin.post("/api/v1/users", json={"username": "carol", "password": "carols-password", "is_admin": True})
    assert r.status_code == 201 and r.json()["is_admin"]
    assert admin.post("/api/v1/users", json={"username": "carol", "password": "carols-password"}).status_code == 409
    assert admin.patch("/api/v1/users/%d" % admin_user.id, json={"is_admin": False}).status_code == 409
    with any_api.db.session() as s:
        assert s.scalar(select(User).where(User.username == "carol")).password_hash.startswith("$argon2id$")
    assert "user.create" in audit_actions(any_api)


def test_malformed_requests_answer_422_with_field(api: Api) -> None:
    c = api.client_for(api.user())
    r = c.post("/api/v1/teams", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and set(r.json()) == {"error", "detail"}
    r = c.post("/api/v1/teams", json={"name": "ok-name", "color": "red"})
    assert r.status_code == 422 and "color" in r.json()["error"]
    r = c.post("/api/v1/teams", json={"name": 5})
    assert r.status_code == 422 and "name" in r.json()["error"]


def test_security_headers(api: Api) -> None:
    r = api.client.get("/api/v1/auth/me")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
