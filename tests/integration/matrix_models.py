"""Permission-matrix rows and seed data for the models routes; see test_permissions_matrix.py."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Set

# rows in the MATRIX format of test_permissions_matrix.py (same columns)
ROWS = """
# --- models: viewers read (monitoring and logs included), contributors create, build, deploy,
# scale, redeploy, stop and manage access keys
GET    /api/v1/projects/{project_id}/models                  401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/models                  401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/models/{model_id}       401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PATCH  /api/v1/projects/{project_id}/models/{model_id}       401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
DELETE /api/v1/projects/{project_id}/models/{model_id}       401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
POST   /api/v1/projects/{project_id}/models/{model_id}/builds 401   404    403    403    ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/models/{model_id}/builds 401   404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/models/{model_id}/builds/{build_id} 401 404 ok ok  ok     ok     ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/models/{model_id}/builds/{build_id}/log 401 404 ok ok ok   ok     ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/models/{model_id}/builds/{build_id}/bundle 401 404 403 403 ok ok ok ok ok ok ok ok
GET    /api/v1/projects/{project_id}/models/{model_id}/deployments 401 404 ok   ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/models/{model_id}/deployment 401 404 403   403    ok     ok     ok     ok     ok     ok     403    403
POST   /api/v1/projects/{project_id}/models/{model_id}/deployment/scale 401 404 403 403 ok  ok     ok     ok     ok     ok     403    403
POST   /api/v1/projects/{project_id}/models/{model_id}/deployment/redeploy 401 404 403 403 ok ok   ok     ok     ok     ok     403    403
POST   /api/v1/projects/{project_id}/models/{model_id}/deployment/stop 401 404 403 403 ok   ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/models/{model_id}/replicas 401 404  ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/models/{model_id}/replicas/{replica_id}/log 401 404 ok ok ok ok  ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/models/{model_id}/access-keys 401 404 ok   ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/models/{model_id}/access-keys 401 404 403  403    ok     ok     ok     ok     ok     ok     403    403
DELETE /api/v1/projects/{project_id}/models/{model_id}/access-keys/{access_key_id} 401 404 403 403 ok ok ok ok ok ok 403 403
# --- calling a model: the access key in the body is the permission (the bogus body gets 422
# before any key is looked at); a browser session without its CSRF token is still refused
POST   /model                                                ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
POST   /api/altus-ds-1/models/call-model                     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     403
"""

# "METHOD /path" keys that change the world and must run against a fresh copy
DESTRUCTIVE: Set[str] = {
    "POST /api/v1/projects/{project_id}/models/{model_id}/builds",  # starts a real build
    "POST /api/v1/projects/{project_id}/models/{model_id}/deployment/stop",  # no body to refuse
}

MODEL_PY = "def predict(args):\n    return args\n"


def _ok(r: Any, code: int = 200) -> Any:
    assert r.status_code == code, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                      r.status_code, r.text)
    return r.json()


def seed(as_: Callable[[str], Any], ids: Dict[str, int]) -> None:
    """Create this feature's objects in the template world; record their ids in `ids`.

    as_(caller_name) is an API-key TestClient of that user ("padmin" owns P, "tadmin" TP)."""
    for project, owner in (("P", "padmin"), ("TP", "tadmin")):
        c = as_(owner)
        base = "/api/v1/projects/%d" % ids[project]
        _ok(c.put(base + "/files/content", json={"path": "model.py", "content": MODEL_PY}))
        model = _ok(c.post(base + "/models", json={"name": "echo", "file": "model.py",
                                                   "function": "predict"}), 201)
        mbase = base + "/models/%d" % model["id"]
        build = _ok(c.post(mbase + "/builds"), 201)
        deadline = time.monotonic() + 60
        while _ok(c.get(mbase + "/builds/%d" % build["id"]))["status"] in ("queued", "building"):
            assert time.monotonic() < deadline, "the seed model's build did not end"
            time.sleep(0.05)
        dep = _ok(c.post(mbase + "/deployment", json={"replicas": 1}), 201)
        [replica] = dep["replica_states"]
        # stopped at once: the template world keeps the rows, no process outlives the seed
        assert _ok(c.post(mbase + "/deployment/stop"))["status"] == "stopped"
        keys = _ok(c.get(mbase + "/access-keys"))
        ids["model:" + project], ids["build:" + project] = model["id"], build["id"]
        ids["replica:" + project], ids["access_key:" + project] = replica["id"], keys[0]["id"]


def path_values(caller: str, ids: Dict[str, int], project: str) -> Dict[str, Any]:
    """Values for this feature's path parameters; project is "P" or "TP" (the caller's target)."""
    return {"model_id": ids["model:" + project], "build_id": ids["build:" + project],
            "replica_id": ids["replica:" + project],
            "access_key_id": ids["access_key:" + project]}
