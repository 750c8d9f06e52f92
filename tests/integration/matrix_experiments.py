"""Permission-matrix rows and seed data for the experiments routes; see test_permissions_matrix.py.

Viewers read runs, compare them and download tracked files; operators start and stop runs."""

from __future__ import annotations

from typing import Any, Callable, Dict, Set

# rows in the MATRIX format of test_permissions_matrix.py (same columns)
ROWS = """
# --- experiments: read and download viewer, start/stop operator
GET    /api/v1/projects/{project_id}/experiments             401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/experiments             401    404    403    ok     ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/experiments/compare     401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/experiments/{experiment_id} 401 404 ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
GET    /api/v1/projects/{project_id}/experiments/{experiment_id}/log 401 404 ok ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/experiments/{experiment_id}/stop 401 404 403 ok   ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/experiments/{experiment_id}/download 401 404 ok ok ok   ok     ok     ok     ok     ok     ok     ok
"""

# "METHOD /path" keys that change the world and must run against a fresh copy
DESTRUCTIVE: Set[str] = {"POST /api/v1/projects/{project_id}/experiments/{experiment_id}/stop"}


def seed(as_: Callable[[str], Any], ids: Dict[str, int]) -> None:
    """One experiment run in P and in TP."""
    for key, owner in (("P", "padmin"), ("TP", "tadmin")):
        c = as_(owner)
        r = c.put("/api/v1/projects/%d/files/content" % ids[key],
                  json={"path": "experiment.py", "content": "print('tried')\n"})
        assert r.status_code == 200, r.text
        r = c.post("/api/v1/projects/%d/experiments" % ids[key], json={"script": "experiment.py"})
        assert r.status_code == 201, r.text
        ids["experiment:" + key] = r.json()["id"]


def path_values(caller: str, ids: Dict[str, int], project: str) -> Dict[str, Any]:
    """Values for this feature's path parameters; project is "P" or "TP" (the caller's target)."""
    return {"experiment_id": ids["experiment:" + project]}
