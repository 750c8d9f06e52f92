"""Site administration: engine images and profiles, site environment, settings, audit log,
what the worker hosts report."""

from __future__ import annotations

import threading
from typing import Any, Dict

from cdsw_agent.settings import Settings

from ..conftest import Api, build_api


def test_engine_images_and_profiles(any_api: Api) -> None:
    admin = any_api.client_for(any_api.user(admin=True))
    user = any_api.client_for(any_api.user())
    body = {"repository": "cdsw/engine", "tag": "py3-abc123", "kernels": ["python3"],
            "editors": ["workbench", "jupyterlab"], "is_default": True}
    assert user.post("/api/v1/engine-images", json=body).status_code == 403
    r = admin.post("/api/v1/engine-images", json=body)
    assert r.status_code == 201 and r.json()["is_default"]
    assert admin.post("/api/v1/engine-images", json=body).status_code == 409
    second = admin.post("/api/v1/engine-images", json=dict(body, tag="v2")).json()
    images = {i["tag"]: i["is_default"] for i in user.get("/api/v1/engine-images").json()}
    assert images == {"py3-abc123": False, "v2": True}  # one default at a time
    r = admin.patch("/api/v1/engine-images/%d" % second["id"], json={"kernels": ["cobol"]})
    assert r.status_code == 422 and "kernels" in r.json()["error"]
    assert admin.post("/api/v1/engine-images", json=dict(body, repository="UPPER/case")).status_code == 422
    assert admin.delete("/api/v1/engine-images/%d" % second["id"]).status_code == 204

    r = admin.post("/api/v1/engine-profiles", json={"name": "big", "cpu": 8, "memory_gb": 32, "gpus": 1})
    assert r.status_code == 201
    assert admin.post("/api/v1/engine-profiles", json={"name": "neg", "cpu": -1, "memory_gb": 1}).status_code == 422
    assert user.get("/api/v1/engine-profiles").json()[0]["gpus"] == 1
    pid = r.json()["id"]
    r = admin.put("/api/v1/engine-profiles/%d" % pid, json={"name": "big", "cpu": 16, "memory_gb": 64})
    assert r.json()["cpu"] == 16


def test_site_env_is_masked_and_audited(any_api: Api) -> None:
    admin = any_api.client_for(any_api.user(admin=True))
    assert admin.put("/api/v1/admin/env/SPARK_HOME", json={"value": "/opt/spark"}).status_code == 200
    assert admin.put("/api/v1/admin/env/AWS_SECRET", json={"value": "s3cr3t", "secret": True}).status_code == 200
    listed = {e["name"]: e["value"] for e in admin.get("/api/v1/admin/env").json()}
    assert listed == {"AWS_SECRET": "****", "SPARK_HOME": "/opt/spark"}
    assert admin.put("/api/v1/admin/env/9X", json={"value": "x"}).status_code == 422
    assert admin.delete("/api/v1/admin/env/NOPE").status_code == 404
    assert admin.delete("/api/v1/admin/env/SPARK_HOME").status_code == 204
    audit = admin.get("/api/v1/admin/audit", params={"action": "site.env.set"}).json()
    assert [e["target"] for e in audit] == ["AWS_SECRET", "SPARK_HOME"]
    assert all("s3cr3t" not in str(e) for e in admin.get("/api/v1/admin/audit").json())


def test_site_settings_validate(api: Api) -> None:
    admin = api.client_for(api.user(admin=True))
    current = admin.get("/api/v1/admin/settings").json()
    assert current["signup_enabled"] is False and current["session_idle_minutes"] == 60
    r = admin.patch("/api/v1/admin/settings", json={"values": {"session_idle_minutes": 0}})
    assert r.status_code == 422 and "at least 1" in r.json()["error"]
    r = admin.patch("/api/v1/admin/settings", json={"values": {"colour": "blue"}})
    assert r.status_code == 422 and "unknown site setting" in r.json()["error"]
    r = admin.patch("/api/v1/admin/settings", json={"values": {"announcement": "maintenance at 6", "session_idle_minutes": 30}})
    assert r.json()["announcement"] == "maintenance at 6" and r.json()["session_idle_minutes"] == 30
    # a refused change leaves nothing half-applied
    r = admin.patch("/api/v1/admin/settings", json={"values": {"announcement": "x", "signup_enabled": "yes"}})
    assert r.status_code == 422
    assert admin.get("/api/v1/admin/settings").json()["announcement"] == "maintenance at 6"


def test_worker_reports_reach_every_master_process_and_outlive_a_restart(
        settings: Settings, db_url: str) -> None:
    """Heartbeats are rows, not one process's memory: what reaches one master process is what
    every other one lists, and a master started later still has it (SQLite and PostgreSQL)."""
    s = settings.with_overrides(db_url=db_url, cluster_secret="the-cluster-secret")
    first, second = build_api(s, db_url), build_api(s, db_url)  # two processes, one database
    try:
        admin = second.user(admin=True)

        def listed(api: Api) -> Dict[str, Dict[str, Any]]:
            r = api.client_for(admin).get("/api/v1/cluster/nodes")
            assert r.status_code == 200, r.text
            return {n["hostname"]: n for n in r.json()["nodes"]}

        beat = {"secret": "the-cluster-secret", "hostname": "w1", "cpus": 4,
                "memory_bytes": 1 << 33, "addresses": ["10.0.0.5"], "checks": {"docker": "ok"}}
        assert first.client.post("/api/v1/cluster/heartbeat", json=beat).status_code == 200
        seen = listed(second)["w1"]
        assert (seen["cpus"], seen["memory_bytes"], seen["addresses"], seen["healthy"]) == \
            (4, 1 << 33, ["10.0.0.5"], True)
        r = second.client.post("/api/v1/cluster/heartbeat", json=dict(beat, healthy=False))
        assert r.status_code == 200
        assert listed(first)["w1"]["healthy"] is False
        r = first.client.post("/api/v1/cluster/heartbeat",
                              json=dict(beat, secret="wrong", hostname="intruder"))
        assert r.status_code == 403
        later = build_api(s, db_url)  # the master restarted
        try:
            assert set(listed(later)) == {"w1"} and listed(later)["w1"]["healthy"] is False
        finally:
            later.db.engine.dispose()
    finally:
        first.db.engine.dispose()
        second.db.engine.dispose()


def test_two_reports_of_one_host_at_once_keep_both(settings: Settings, db_url: str) -> None:
    """A worker's report (join, heartbeat) adds fields to its row. Two at once (two master
    processes) must not lose either's fields: PostgreSQL's READ COMMITTED and SQLite's SELECTs
    outside a transaction would let the later read-modify-write drop the earlier's. The row
    is read under the write lock (routes/cluster.locked_node): a second report waits for the
    first to commit, then adds its field to what the first wrote."""
    from cdsw_agent.server.routes import cluster as cluster_routes
    from cdsw_agent.store.models import ClusterNode

    api = build_api(settings.with_overrides(db_url=db_url), db_url)
    try:
        first = api.db.sessionmaker()
        cluster_routes._report(first, "w1", cpus=4)
        row = cluster_routes.locked_node(first, "w1")  # a report half done
        assert row is not None
        done = threading.Event()

        def second_report() -> None:
            s = api.db.sessionmaker()
            try:
                cluster_routes._report(s, "w1", joined_at="now")
            finally:
                s.close()
                done.set()

        t = threading.Thread(target=second_report)
        t.start()
        assert not done.wait(1.0), "the second report did not wait for the first"
        row.report = dict(row.report, healthy=True)
        first.commit()
        first.close()
        assert done.wait(10)
        t.join(10)
        with api.db.session() as s:
            assert s.get(ClusterNode, "w1").report == {"cpus": 4, "healthy": True,
                                                        "joined_at": "now"}
    finally:
        api.db.engine.dispose()
