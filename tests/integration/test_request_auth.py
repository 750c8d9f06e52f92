"""Every authenticated request is checked against the database, in one query, with nothing
cached between requests (issue 14 made that check cheaper, not weaker): a revoked key, an
expired one, a deactivated user's key and a signed-out browser are refused from their next
request on; a key reaches only what its user's roles allow; the project list's roles, now read
in the list's own query, are the ones project_role gives; each request gives its database
connection back."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy import update

from cdsw_agent.server.permissions import project_role
from cdsw_agent.store.models import ApiKey, Project, User

from ..conftest import Api


def test_a_revoked_key_is_refused_at_its_next_request(any_api: Api) -> None:
    u = any_api.user()
    browser = any_api.client_for(u)
    key = browser.post("/api/v1/account/api-keys", json={"name": "script"}).json()["key"]
    pid = browser.post("/api/v1/projects", json={"name": "kept"}).json()["id"]
    bearer = TestClient(any_api.client.app, headers={"Authorization": "Bearer " + key})
    for path in ("/api/v1/projects?limit=100", "/api/v1/projects/%d" % pid, "/api/v1/account"):
        assert bearer.get(path).status_code == 200
    key_id = browser.get("/api/v1/account/api-keys").json()[0]["id"]
    assert browser.delete("/api/v1/account/api-keys/%d" % key_id).status_code == 204
    for path in ("/api/v1/projects?limit=100", "/api/v1/projects/%d" % pid, "/api/v1/account"):
        r = bearer.get(path)
        assert r.status_code == 401 and r.json()["error"] == "invalid, expired or revoked API key"
    r = bearer.patch("/api/v1/projects/%d" % pid, json={"name": "taken over"})
    assert r.status_code == 401
    assert browser.get("/api/v1/projects/%d" % pid).json()["name"] == "kept"


def test_a_deactivated_users_key_and_session_are_refused_at_once(any_api: Api) -> None:
    u = any_api.user()
    keyed = any_api.key_client(u)
    browser = any_api.client_for(u)
    assert keyed.get("/api/v1/projects").status_code == 200
    assert browser.get("/api/v1/projects").status_code == 200
    with any_api.db.session() as s:  # as the admin page does, or another master process
        s.execute(update(User).where(User.id == u.id).values(is_active=False))
    assert keyed.get("/api/v1/projects").status_code == 401
    assert browser.get("/api/v1/projects").status_code == 401
    assert keyed.post("/api/v1/projects", json={"name": "after"}).status_code == 401
    with any_api.db.session() as s:  # and back: nothing was remembered either way
        s.execute(update(User).where(User.id == u.id).values(is_active=True))
    assert keyed.get("/api/v1/projects").status_code == 200


def test_expired_unknown_and_forged_keys(any_api: Api) -> None:
    u = any_api.user()
    key = any_api.api_key(u)
    ok = TestClient(any_api.client.app, headers={"Authorization": "Bearer " + key})
    assert ok.get("/api/v1/projects").status_code == 200
    for forged in (key[:-1] + ("A" if key[-1] != "A" else "B"), "cdswk_", key + "x",
                   "' OR 1=1 --"):
        r = TestClient(any_api.client.app, headers={"Authorization": "Bearer " + forged}) \
            .get("/api/v1/projects")
        assert r.status_code == 401, forged
    with any_api.db.session() as s:
        s.execute(update(ApiKey).values(expires_at=dt.datetime(2000, 1, 1)))
    assert ok.get("/api/v1/projects").status_code == 401


def test_a_key_reaches_only_what_its_users_roles_allow(any_api: Api) -> None:
    owner, viewer, stranger = any_api.user(), any_api.user(), any_api.user()
    c = any_api.client_for(owner)
    pid = c.post("/api/v1/projects", json={"name": "private work"}).json()["id"]
    assert c.put("/api/v1/projects/%d/collaborators/%d" % (pid, viewer.id),
                 json={"role": "viewer"}).status_code == 200
    s = any_api.key_client(stranger)  # a key of a user without a role on the project
    for method, path, body in (("GET", "/api/v1/projects/%d" % pid, None),
                               ("PATCH", "/api/v1/projects/%d" % pid, {"name": "x"}),
                               ("GET", "/api/v1/projects/%d/files" % pid, None),
                               ("PUT", "/api/v1/projects/%d/files/content" % pid,
                                {"path": "a.py", "content": "x"}),
                               ("DELETE", "/api/v1/projects/%d" % pid, None)):
        r = s.request(method, path, json=body)
        assert r.status_code == 404 and r.json()["error"] == "project not found", (method, path)
    assert [p["id"] for p in s.get("/api/v1/projects").json()] == []
    v = any_api.key_client(viewer)
    assert v.get("/api/v1/projects/%d" % pid).json()["your_role"] == "viewer"
    r = v.put("/api/v1/projects/%d/files/content" % pid, json={"path": "a.py", "content": "x"})
    assert r.status_code == 403 and "contributor role" in r.json()["error"]
    reader = any_api.key_client(owner, scope="read")
    r = reader.patch("/api/v1/projects/%d" % pid, json={"name": "x"})
    assert r.status_code == 403 and "read scope" in r.json()["error"]
    assert any_api.client_for(None).get("/api/v1/projects").status_code == 401


def test_the_lists_roles_are_project_roles(any_api: Api) -> None:
    """The list reads each row's role facts in its own query; the answer must be the rule's
    (project_role) for every kind of relation, and must leave out what the caller cannot see."""
    lead, me = any_api.user(), any_api.user()
    c = any_api.client_for(lead)
    admins = c.post("/api/v1/teams", json={"name": "leads"}).json()["id"]
    members = c.post("/api/v1/teams", json={"name": "crew"}).json()["id"]
    assert c.put("/api/v1/teams/%d/members/%d" % (admins, me.id),
                 json={"role": "admin"}).status_code == 200
    assert c.put("/api/v1/teams/%d/members/%d" % (members, me.id),
                 json={"role": "member"}).status_code == 200
    made = {}
    for name, body in (("team-admin", {"owner_team_id": admins, "visibility": "team"}),
                       ("team-member", {"owner_team_id": members, "visibility": "team"}),
                       ("public", {"visibility": "public"}),
                       ("collaborator", {}), ("public-operator", {"visibility": "public"}),
                       ("hidden", {})):
        made[name] = c.post("/api/v1/projects", json=dict(body, name=name)).json()["id"]
    for name, role in (("collaborator", "contributor"), ("public-operator", "operator")):
        assert c.put("/api/v1/projects/%d/collaborators/%d" % (made[name], me.id),
                     json={"role": role}).status_code == 200
    mine = any_api.key_client(me).post("/api/v1/projects", json={"name": "own"}).json()["id"]
    listed = {p["name"]: p["your_role"] for p in any_api.key_client(me).get(
        "/api/v1/projects", params={"limit": 100}).json()}
    assert listed == {"team-admin": "admin", "team-member": "contributor", "public": "viewer",
                      "collaborator": "contributor", "public-operator": "operator",
                      "own": "admin"}
    with any_api.db.session() as s:
        user = s.get(User, me.id)
        for name, pid in list(made.items()) + [("own", mine)]:
            assert listed.get(name) == project_role(s, user, s.get(Project, pid)), name
    site_admin = any_api.key_client(any_api.user(admin=True)).get("/api/v1/projects").json()
    assert {p["your_role"] for p in site_admin} == {"admin"} and len(site_admin) == 7


def test_each_request_gives_its_connection_back(any_api: Api) -> None:
    u = any_api.user()
    keyed = any_api.key_client(u)
    browser = any_api.client_for(u)
    pid = browser.post("/api/v1/projects", json={"name": "p"}).json()["id"]
    for _ in range(3):
        assert keyed.get("/api/v1/projects").status_code == 200  # reads only
        assert keyed.get("/api/v1/projects/%d/nope" % pid).status_code == 404
        assert keyed.patch("/api/v1/projects/%d" % pid, json={"name": "p"}).status_code == 200
        assert keyed.patch("/api/v1/projects/%d" % pid,
                           json={"visibility": "bad"}).status_code == 422
        assert TestClient(any_api.client.app, headers={"Authorization": "Bearer nope"}) \
            .get("/api/v1/projects").status_code == 401
    assert any_api.db.engine.pool.checkedout() == 0


def test_a_def_route_decides_its_permission_in_its_own_worker_thread(any_api: Api,
                                                                      monkeypatch) -> None:
    """One thread-pool hop per call (permissions.Pending): the caller, the permission and the
    route's work in one worker thread, where they took two hops before."""
    import threading

    import anyio.to_thread

    from cdsw_agent.server import deps, permissions
    from cdsw_agent.server.routes import projects

    keyed = any_api.key_client(any_api.user())
    assert keyed.get("/api/v1/projects").status_code == 200  # warm
    hops, threads = [], {}
    run_sync = anyio.to_thread.run_sync

    async def counted(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(func)
        return await run_sync(func, *args, **kwargs)

    def recorded(name, original):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            threads[name] = threading.get_ident()
            return original(*args, **kwargs)
        return call

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    monkeypatch.setattr(permissions, "current_caller",
                        recorded("caller", permissions.current_caller))
    monkeypatch.setattr(projects, "project_rows", recorded("route", projects.project_rows))
    assert keyed.get("/api/v1/projects").status_code == 200
    # (on PostgreSQL get_db's closing ROLLBACK, a network round trip, takes a hop of its own)
    hops = [f for f in hops if f is not deps.release]
    assert len(hops) == 1 and threads["caller"] == threads["route"], (hops, threads)


def test_who_may_not_make_a_call_learns_nothing_of_its_input(any_api: Api) -> None:
    """Parameters are validated before a `def` route's permission is decided: a caller who may
    not make the call still gets the refusal, not what was wrong with their input."""
    owner, viewer = any_api.user(), any_api.user()
    browser = any_api.client_for(owner)
    pid = browser.post("/api/v1/projects", json={"name": "p"}).json()["id"]
    r = browser.put("/api/v1/projects/%d/collaborators/%d" % (pid, viewer.id),
                    json={"role": "viewer"})
    assert r.status_code == 200, r.text
    anonymous = TestClient(any_api.client.app)
    assert anonymous.get("/api/v1/projects?limit=nope").status_code == 401
    stranger = any_api.key_client(any_api.user())
    bad = {"visibility": "bad"}
    assert stranger.patch("/api/v1/projects/%d" % pid, json=bad).status_code == 404
    assert any_api.key_client(viewer).patch("/api/v1/projects/%d" % pid, json=bad) \
        .status_code == 403
    assert any_api.key_client(owner).patch("/api/v1/projects/%d" % pid, json=bad) \
        .status_code == 422
    # a page: the browser is sent to sign in, as for a valid address
    r = anonymous.get("/admin/audit?before_id=nope", headers={"Accept": "text/html"},
                      follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/signin?next="), r
    assert any_api.client_for(owner).get("/admin/audit?before_id=nope",
                                        headers={"Accept": "text/html"}).status_code == 403
    assert any_api.db.engine.pool.checkedout() == 0


def test_more_concurrent_calls_than_connections_and_threads_do_not_stall(settings) -> None:
    """A request gives its connection back between the permission check and its route: one
    that kept it while waiting for a worker thread, with every thread blocked waiting for a
    connection, stalled the server until the pool's timeout (seen at 100 clients with the
    default 15 connections and 40 threads). Here: 1 connection, 2 threads, 8 calls at once."""
    import asyncio
    import threading

    import anyio.to_thread
    import httpx
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from cdsw_agent.server.app import create_app
    from cdsw_agent.store.db import Database

    db = Database(settings.database_url)
    db.upgrade()
    db.engine.dispose()
    db.engine = create_engine(settings.database_url, pool_size=1, max_overflow=0, pool_timeout=5,
                              connect_args={"check_same_thread": False, "timeout": 30})
    db.sessionmaker = sessionmaker(db.engine, expire_on_commit=False)
    api = Api(TestClient(create_app(settings, db)), settings, db)
    key = api.api_key(api.user())

    async def calls() -> list:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        transport = httpx.ASGITransport(app=api.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     headers={"Authorization": "Bearer " + key}) as client:
            return await asyncio.gather(*(client.get("/api/v1/projects") for _ in range(8)))

    # a thread of its own: in a full run an earlier test may leave an event loop running in
    # this one, where asyncio.run refuses to start
    answers: list = []
    runner = threading.Thread(target=lambda: answers.extend(asyncio.run(calls())))
    runner.start()
    runner.join(120)
    # a stalled call would have waited out the 5 s pool timeout and failed, not answered 200
    assert [r.status_code for r in answers] == [200] * 8, [r.text[:200] for r in answers]
    db.engine.dispose()
