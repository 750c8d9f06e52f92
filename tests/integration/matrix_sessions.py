"""Permission-matrix rows and seed data for the sessions routes; see test_permissions_matrix.py.

The seeded sessions are stopped (allowed calls that need a running engine answer 409). P's
session belongs to padmin and is shared with viewer (view) and operator (interactive); TP's
belongs to tadmin. Nobody else reaches a session's kernel, console or engine: not the
contributor, not the team member, not the site admin."""

from __future__ import annotations

from typing import Any, Callable, Dict, Set

# rows in the MATRIX format of test_permissions_matrix.py (same columns)
ROWS = """
# --- sessions: viewers list metadata; only the owner and those it shared with reach the engine
GET    /api/v1/projects/{project_id}/sessions                401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/sessions                401    404    403    ok     ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/sessions/{session_id}                         401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/sessions/{session_id}/stop                    401    404    403    403    403    ok     403    ok     ok     ok     403    403
POST   /api/v1/sessions/{session_id}/execute                 401    404    403    ok     403    ok     403    ok     403    ok     403    403
POST   /api/v1/sessions/{session_id}/complete                401    404    403    ok     403    ok     403    ok     403    ok     403    403
POST   /api/v1/sessions/{session_id}/interrupt               401    404    403    ok     403    ok     403    ok     403    ok     403    403
POST   /api/v1/sessions/{session_id}/restart                 401    404    403    ok     403    ok     403    ok     403    ok     403    403
POST   /api/v1/sessions/{session_id}/terminals               401    404    403    ok     403    ok     403    ok     403    ok     403    403
POST   /api/v1/sessions/{session_id}/engine-access           401    404    403    ok     403    ok     403    ok     403    ok     403    403
GET    /api/v1/sessions/{session_id}/log                     401    404    ok     ok     403    ok     403    ok     403    ok     ok     ok
GET    /api/v1/sessions/{session_id}/shares                  401    404    403    403    403    ok     403    ok     403    ok     ok     ok
PUT    /api/v1/sessions/{session_id}/shares/{user_id}        401    404    403    403    403    ok     403    ok     403    ok     403    403
DELETE /api/v1/sessions/{session_id}/shares/{user_id}        401    404    403    403    403    ok     403    ok     403    ok     403    403
# engine content: browsers reach it on its own origin with an engine cookie
# (test_engine_origin.py); here, on the workbench's origin, API keys only, never the sign-in
GET    /api/v1/sessions/{session_id}/engine/{path}           401    401    401    401    401    401    401    401    401    ok     ok     401
POST   /api/v1/sessions/{session_id}/engine/{path}           401    401    401    401    401    401    401    401    401    ok     403    401
PUT    /api/v1/sessions/{session_id}/engine/{path}           401    401    401    401    401    401    401    401    401    ok     403    401
PATCH  /api/v1/sessions/{session_id}/engine/{path}           401    401    401    401    401    401    401    401    401    ok     403    401
DELETE /api/v1/sessions/{session_id}/engine/{path}           401    401    401    401    401    401    401    401    401    ok     403    401
"""

# "METHOD /path" keys that change the world and must run against a fresh copy
DESTRUCTIVE: Set[str] = {"PUT /api/v1/sessions/{session_id}/shares/{user_id}"}


def _ok(r: Any, code: int) -> Any:
    assert r.status_code == code, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                      r.status_code, r.text)
    return r.json()


def seed(as_: Callable[[str], Any], ids: Dict[str, int]) -> None:
    """Create this feature's objects in the template world; record their ids in `ids`.

    as_(caller_name) is an API-key TestClient of that user ("padmin" owns P, "tadmin" TP)."""
    for key, owner, shares in (("P", "padmin", {"viewer": "view", "operator": "interactive",
                                                "victim": "view"}),
                               ("TP", "tadmin", {"victim": "view"})):
        c = as_(owner)
        session = _ok(c.post("/api/v1/projects/%d/sessions" % ids[key], json={}), 201)
        _ok(c.post("/api/v1/sessions/%d/stop" % session["id"]), 200)
        for user, mode in shares.items():
            _ok(c.put("/api/v1/sessions/%d/shares/%d" % (session["id"], ids["user:" + user]),
                      json={"mode": mode}), 200)
        ids["session:" + key] = session["id"]


def path_values(caller: str, ids: Dict[str, int], project: str) -> Dict[str, Any]:
    """Values for this feature's path parameters; project is "P" or "TP" (the caller's target)."""
    return {"session_id": ids["session:" + project], "path": "api/status"}
