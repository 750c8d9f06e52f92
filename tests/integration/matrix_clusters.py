"""Permission-matrix rows and seed data for clusters and promotions; see
test_permissions_matrix.py.

Clusters: every signed-in user reads them; only site administrators register, remove and grant.
A project's home cluster: its viewers read it, its admins move it. Promotions: a project's
viewers read its history; Contributors request; the review (approve, reject) and the rollback
are the target project's: Contributors there with a grant on its cluster (the default cluster,
open to all, here), never the requester for the review. The seeded promotions go from a project
on cluster DEV to P (requested by padmin) and to TP (requested by tadmin), so padmin (and its
keys) and tadmin may not review them."""

from __future__ import annotations

from typing import Any, Callable, Dict, Set

ROWS = """
# --- clusters: signed-in users read; site administrators register, remove and grant
GET    /api/v1/clusters                                      401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/clusters                                      401    403    403    403    403    403    403    403    ok     403    403    403
GET    /api/v1/clusters/{cluster_id}                         401    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
DELETE /api/v1/clusters/{cluster_id}                         401    403    403    403    403    403    403    403    ok     403    403    403
POST   /api/v1/clusters/{cluster_id}/grants                  401    403    403    403    403    403    403    403    ok     403    403    403
DELETE /api/v1/clusters/{cluster_id}/grants/{grant_id}       401    403    403    403    403    403    403    403    ok     403    403    403
# --- a project's home cluster: viewers read, project admins move it
GET    /api/v1/projects/{project_id}/cluster                 401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
PUT    /api/v1/projects/{project_id}/cluster                 401    404    403    403    403    ok     403    ok     ok     ok     403    403
# --- promotions: viewers read, contributors request; the target reviews (never the requester)
GET    /api/v1/projects/{project_id}/promotions              401    404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/promotions              401    404    403    403    ok     ok     ok     ok     ok     ok     403    403
GET    /api/v1/projects/{project_id}/promotions/{promotion_id} 401  404    ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
POST   /api/v1/projects/{project_id}/promotions/{promotion_id}/approve 401 404 403 403 ok     403    ok     403    ok     403    403    403
POST   /api/v1/projects/{project_id}/promotions/{promotion_id}/reject 401 404 403 403 ok      403    ok     403    ok     403    403    403
POST   /api/v1/projects/{project_id}/promotions/{promotion_id}/rollback 401 404 403 403 ok    ok     ok     ok     ok     ok     403    403
"""

DESTRUCTIVE: Set[str] = set()


def _ok(r: Any, code: int = 200) -> Any:
    assert r.status_code == code, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                      r.status_code, r.text)
    return r.json()


def seed(as_: Callable[[str], Any], ids: Dict[str, int]) -> None:
    admin = as_("sadmin")
    dev = _ok(admin.post("/api/v1/clusters", json={"name": "DEV", "requires_grant": False}), 201)
    ids["cluster"] = dev["id"]
    granted = _ok(admin.post("/api/v1/clusters/%d/grants" % dev["id"],
                             json={"username": "victim"}), 201)
    ids["grant"] = granted["grants"][0]["id"]
    for target, owner in (("P", "padmin"), ("TP", "tadmin")):
        c = as_(owner)
        source = _ok(c.post("/api/v1/projects", json={"name": "On DEV %s" % target}), 201)
        _ok(c.put("/api/v1/projects/%d/cluster" % source["id"], json={"cluster": "DEV"}))
        promotion = _ok(c.post("/api/v1/projects/%d/promotions" % source["id"],
                               json={"target_project_id": ids[target]}), 201)
        ids["promotion:" + target] = promotion["id"]


def path_values(caller: str, ids: Dict[str, Any], project: str) -> Dict[str, Any]:
    return {"cluster_id": ids["cluster"], "grant_id": ids["grant"],
            "promotion_id": ids["promotion:" + project]}
