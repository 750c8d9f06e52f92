"""Warm engines on the swarm backend (sessions/warm_pool.py, engine/warm.py), real engine image.

What is proven, as a user and as an attacker would see it:
- a warm engine holds nothing of anyone before its claim: no mount, no user's or project's
  variable or label, an empty /home/cdsw;
- two users' sessions take two warm engines, and each sees its own identity, project folder and
  home, nothing of the other's; an engine is never given back: a session's engine ends with it;
- only the pool's secret claims an engine: a collaborator's code in a session next to it cannot,
  and after the claim the port answers the session's token only;
- the pool is bounded (never more than session_warm_engines wait), refills after a claim, gives
  up engines the settings no longer want, and a restarted master removes what the last one left;
- a claim that fails (the engine vanished) starts the session cold.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest

from cdsw_agent.engine.warm import CLAIM_PATH, WARM_VARIABLE
from cdsw_agent.server import scheduler
from cdsw_agent.sessions.monitor import manager_for
from cdsw_agent.sessions.warm_pool import WARM_LABEL, WarmPool
from cdsw_agent.workloads.engine import PROJECT_LABEL, USER_LABEL

from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .test_jobs_api import start_jobs
from .test_sessions_swarm import SwarmMaster, lab_master

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def master(engine_image: str, docker_engine: Any,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmMaster]:
    with lab_master(engine_image, docker_engine, tmp_path_factory, "warm",
                    session_warm_engines=2) as m:
        try:
            yield m
        finally:  # no engine refills while the workloads are removed
            p = pool(m)
            p.settings = p.settings.with_overrides(session_warm_engines=0)


def pool(m: SwarmMaster) -> WarmPool:
    return manager_for(m.api.client.app.state.server).warm


def ready_engines(m: SwarmMaster, count: int, timeout: float = 120) -> List[Any]:
    """Ticks the pool until exactly `count` engines wait, all ready."""
    p, deadline = pool(m), time.monotonic() + timeout
    while True:
        p.tick()
        engines = p.engines()
        if len(engines) == count and all(e.ready for e in engines):
            return engines
        assert time.monotonic() < deadline, engines
        time.sleep(0.3)


def service_spec(m: SwarmMaster, workload_id: str) -> Dict[str, Any]:
    return m.docker.api.inspect_service(workload_id)["Spec"]


def container_of(m: SwarmMaster, workload_id: str) -> Any:
    found = m.docker.containers.list(filters={"label": "com.docker.swarm.service.id=" +
                                              workload_id})
    assert len(found) == 1, found
    return found[0]


def kernel_facts(m: SwarmMaster, client: Any, sid: int) -> Dict[str, Any]:
    code = ("import json, os\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), "
            "'files': sorted(os.listdir('.')), 'home': sorted(os.listdir(os.environ['HOME']))}))")
    with client.stream("POST", "/api/v1/sessions/%d/execute" % sid, json={"code": code}) as r:
        assert r.status_code == 200, r.read()
        out = [json.loads(line) for line in r.iter_lines() if line]
    return json.loads(out[0]["text"])


def start(client: Any, project_id: int) -> int:
    r = client.post("/api/v1/projects/%d/sessions" % project_id, json={})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def wait(client: Any, sid: int, timeout: float = 120,
         states: tuple = ("running", "failed", "stopped")) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = client.get("/api/v1/sessions/%d" % sid).json()
        if s["status"] in states or time.monotonic() > deadline:
            return s
        time.sleep(0.1)


def workload_of(m: SwarmMaster, sid: int) -> str:
    from cdsw_agent.store.sessions_models import EngineSession

    with m.api.db.session() as s:
        row = s.get(EngineSession, sid)
        assert row is not None and row.workload_id
        return row.workload_id


def test_a_warm_engine_holds_nothing_of_anyone(master: SwarmMaster) -> None:
    for engine in ready_engines(master, 2):
        spec = service_spec(master, engine.workload_id)
        container = spec["TaskTemplate"]["ContainerSpec"]
        assert not container.get("Mounts"), container.get("Mounts")
        env = dict(e.split("=", 1) for e in container.get("Env", []))
        assert set(env) == {WARM_VARIABLE, "CDSW_ENGINE_PORT"}, env
        assert engine.secret not in json.dumps(spec)  # only its digest
        assert spec["Labels"].get(WARM_LABEL) == "1"
        assert USER_LABEL not in spec["Labels"] and PROJECT_LABEL not in spec["Labels"]
        listing = container_of(master, engine.workload_id).exec_run(["ls", "-A", "/home/cdsw"])
        assert listing.exit_code == 0 and listing.output == b"", listing.output


def test_two_users_take_two_warm_engines_each_with_only_their_own(master: SwarmMaster) -> None:
    api = master.api
    bob = api.user("bob")
    bob_client = api.key_client(bob)
    r = bob_client.post("/api/v1/projects", json={"name": "bobs"})
    assert r.status_code == 201, r.text
    bob_project = r.json()["id"]
    data = Path(api.settings.data_dir) / "projects"
    (data / str(master.project_id) / "admins-file.txt").write_text("admin's")
    (data / str(bob_project)).mkdir(parents=True, exist_ok=True)
    (data / str(bob_project) / "bobs-file.txt").write_text("bob's")

    waiting = {e.workload_id for e in ready_engines(master, 2)}
    began = time.monotonic()
    admin_sid = start(master.client, master.project_id)
    bob_sid = start(bob_client, bob_project)
    for client, sid in ((master.client, admin_sid), (bob_client, bob_sid)):
        state = wait(client, sid)
        if state["status"] != "running":
            wl = workload_of(master, sid)
            print(container_of(master, wl).logs().decode()[-3000:])
        assert state["status"] == "running", state
    print("two warm sessions running %.2f s after the first request" % (time.monotonic() - began))
    admin_wl, bob_wl = workload_of(master, admin_sid), workload_of(master, bob_sid)
    assert {admin_wl, bob_wl} == waiting  # both were warm engines

    admin, bob_facts = kernel_facts(master, master.client, admin_sid), \
        kernel_facts(master, bob_client, bob_sid)
    assert admin["env"]["HADOOP_USER_NAME"] == "admin" and bob_facts["env"]["HADOOP_USER_NAME"] == "bob"
    assert admin["cwd"] == bob_facts["cwd"] == "/home/cdsw"
    assert "admins-file.txt" in admin["files"] and "bobs-file.txt" not in admin["files"]
    assert "bobs-file.txt" in bob_facts["files"] and "admins-file.txt" not in bob_facts["files"]
    assert WARM_VARIABLE not in bob_facts["env"] and WARM_VARIABLE not in admin["env"]
    # the session's own web app path (CDSW_APP_PATH names its session), taken at the claim
    assert bob_facts["env"]["CDSW_APP_PATH"] == "/api/v1/sessions/%d/engine/proxy/8100/" % bob_sid
    assert bob_facts["env"]["CDSW_APP_PORT"] == "8100"
    assert not [k for k, v in bob_facts["env"].items() if "admin" in v.lower()], bob_facts["env"]
    # each session's engine carries its own labels now, and its own mounts only
    for sid, wl, user in ((admin_sid, admin_wl, "admin"), (bob_sid, bob_wl, "bob")):
        labels = service_spec(master, wl)["Labels"]
        assert WARM_LABEL not in labels and labels["io.cdsw.session"] == str(sid)
        # relabelled in place: the warm container itself became the session, no new task
        assert len(master.docker.api.tasks(filters={"service": wl})) == 1
    # the pool refilled with new engines, never the claimed ones
    refilled = {e.workload_id for e in ready_engines(master, 2)}
    assert not refilled & waiting

    # the pool's secret of a claimed engine opens nothing any more
    claimed = container_of(master, bob_wl)
    port = service_spec(master, bob_wl)["EndpointSpec"]["Ports"][0]["PublishedPort"]
    r = httpx.post("http://%s:%d%s" % (master.host.address, port, CLAIM_PATH),
                   json={"env": {}, "workdir": "/"}, timeout=10)
    assert r.status_code in (403, 404), r.text
    assert claimed.status == "running"

    # a collaborator's code next to a warm engine cannot claim it: no secret (only its digest
    # is in that engine), and the engine firewall drops a container's traffic to engine ports
    target = pool(master).engines()[0]
    probe = ("import urllib.request, json\n"
             "req = urllib.request.Request('http://%s:%d%s', data=json.dumps({'env': {}, "
             "'workdir': '/'}).encode(), headers={'Authorization': 'token guess'})\n"
             "try:\n    print(urllib.request.urlopen(req, timeout=3).status)\n"
             "except Exception as e:\n    print('refused', type(e).__name__)\n"
             % (master.host.address, target.host_port, CLAIM_PATH))
    with bob_client.stream("POST", "/api/v1/sessions/%d/execute" % bob_sid,
                           json={"code": probe}) as r:
        out = [json.loads(line) for line in r.iter_lines() if line]
    assert out[0]["text"].startswith("refused"), out
    assert target.workload_id in {e.workload_id for e in pool(master).engines()}

    # an engine ends with its session: stopped, then removed, never back in the pool
    for client, sid in ((master.client, admin_sid), (bob_client, bob_sid)):
        assert client.post("/api/v1/sessions/%d/stop" % sid).status_code in (200, 202)
        assert wait(client, sid, states=("stopped", "failed"))["status"] == "stopped"
    assert admin_wl not in {e.workload_id for e in pool(master).engines()}


def test_the_pool_is_bounded_trimmed_and_swept_after_a_restart(master: SwarmMaster) -> None:
    p = pool(master)
    ready_engines(master, 2)
    p.settings = p.settings.with_overrides(session_warm_engines=1)
    kept = ready_engines(master, 1)
    orch = manager_for(master.api.client.app.state.server).orchestrator
    assert [r.id for r in orch.list({WARM_LABEL: "1"})] == [kept[0].workload_id]
    # a restarted master (a pool that never saw it) removes it: its secret is gone
    restarted = WarmPool(p.db, p.settings.with_overrides(session_warm_engines=0),
                         p._orchestrator, p._address, p._free_port)
    restarted.tick()
    assert orch.list({WARM_LABEL: "1"}) == []
    p.tick()  # the old pool forgets the engine that vanished, then starts its one
    ready_engines(master, 1)
    p.settings = p.settings.with_overrides(session_warm_engines=0)
    p.tick()
    assert p.engines() == [] and orch.list({WARM_LABEL: "1"}) == []
    p.settings = p.settings.with_overrides(session_warm_engines=2)


def test_a_claim_that_fails_starts_the_session_cold(master: SwarmMaster) -> None:
    engines = ready_engines(master, 2)
    orch = manager_for(master.api.client.app.state.server).orchestrator
    for e in engines:  # behind the pool's back: its engines are gone, it still thinks ready
        orch.remove(e.workload_id)
    sid = start(master.client, master.project_id)
    s = wait(master.client, sid)
    assert s["status"] == "running", s
    assert workload_of(master, sid) not in {e.workload_id for e in engines}
    facts = kernel_facts(master, master.client, sid)
    assert "admins-file.txt" in facts["files"]
    assert master.client.post("/api/v1/sessions/%d/stop" % sid).status_code in (200, 202)


def test_a_session_with_the_clusters_client_configuration_takes_a_warm_engine(
        master: SwarmMaster, tmp_path: Path) -> None:
    """Last in this module: the bundle it collects stays. The session is described for the
    warm engine's node and Spark ports, so its Spark driver advertises what that engine
    publishes, and its Hadoop configuration is injected read-only."""
    from cdsw_agent.clientconfig import bundles_dir, collect

    conf = tmp_path / "hadoop-conf"
    conf.mkdir()
    namenode = "hdfs://nn-%s:8020" % os.urandom(3).hex()
    (conf / "core-site.xml").write_text(
        "<configuration><property><name>fs.defaultFS</name><value>%s</value></property>"
        "</configuration>\n" % namenode)
    collect([conf], bundles_dir(master.api.settings))
    waiting = {e.workload_id: e for e in ready_engines(master, 2)}
    sid = start(master.client, master.project_id)
    assert wait(master.client, sid)["status"] == "running"
    engine = waiting[workload_of(master, sid)]  # a warm one
    code = ("import json, os\nh, s = os.environ['HADOOP_CONF_DIR'], os.environ['SPARK_CONF_DIR']\n"
            "print(json.dumps([open(h + '/core-site.xml').read(), "
            "open(s + '/spark-defaults.conf').read(), os.access(h, os.W_OK)]))")
    with master.client.stream("POST", "/api/v1/sessions/%d/execute" % sid,
                              json={"code": code}) as r:
        out = [json.loads(line) for line in r.iter_lines() if line]
    core_site, spark_defaults, writable = json.loads(out[0]["text"])
    assert namenode in core_site and not writable
    settings = dict(line.split(None, 1) for line in spark_defaults.splitlines()
                    if line.strip() and not line.startswith("#"))
    assert settings["spark.driver.host"].strip() == master.host.address
    assert int(settings["spark.driver.port"]) == engine.spark_ports.driver
    assert int(settings["spark.driver.blockManager.port"]) == engine.spark_ports.block_manager
    assert master.client.post("/api/v1/sessions/%d/stop" % sid).status_code in (200, 202)


def test_a_claimed_engine_has_the_mounts_a_cold_one_has(master: SwarmMaster) -> None:
    """The same session, once on a cold engine (Docker's binds) and once on a warm one (the
    injected mounts): the same mount points, each read-only or writable alike (every mount of
    the container: the project, the home, the client configuration this module collected)."""
    code = ("import json\nrows = [l.split() for l in open('/proc/self/mountinfo')]\n"
            "print(json.dumps(sorted([r[4], r[5].split(',')[0]] for r in rows)))")

    def mounts_of_a_session() -> Tuple[List[List[str]], str]:
        sid = start(master.client, master.project_id)
        assert wait(master.client, sid)["status"] == "running"
        workload = workload_of(master, sid)
        with master.client.stream("POST", "/api/v1/sessions/%d/execute" % sid,
                                  json={"code": code}) as r:
            out = [json.loads(line) for line in r.iter_lines() if line]
        assert master.client.post("/api/v1/sessions/%d/stop" % sid).status_code in (200, 202)
        assert wait(master.client, sid, states=("stopped", "failed"))["status"] == "stopped"
        return json.loads(out[0]["text"]), workload

    p = pool(master)
    p.settings = p.settings.with_overrides(session_warm_engines=0)
    p.tick()
    cold, _ = mounts_of_a_session()
    p.settings = p.settings.with_overrides(session_warm_engines=2)
    waiting = {e.workload_id for e in ready_engines(master, 2)}
    warm, workload = mounts_of_a_session()
    assert workload in waiting  # the second session was a warm engine
    assert cold == warm and ["/home/cdsw", "rw"] in cold, (cold, warm)


@contextlib.contextmanager
def reserving_engines(m: SwarmMaster) -> Iterator[Tuple[WarmPool, int, set]]:
    """Two warm engines of a profile holding 80 % of the node's CPU; yields the pool, a profile
    asking for 50 % and the engines' workload ids. The pool is emptied afterwards."""
    from cdsw_agent.workloads.engine import cluster_nodes

    manager = manager_for(m.api.client.app.state.server)
    p = pool(m)
    p.settings = p.settings.with_overrides(session_warm_engines=0)
    p.tick()
    node = next(n for n in cluster_nodes(manager.orchestrator) if n.name == "h1")
    assert node.cpu_allocated == 0, node  # nothing of earlier tests holds CPU
    ids = {}
    for name, share in (("warm-share", 0.4), ("big", 0.5)):  # two warm engines: 80 %
        known = {x["name"]: x["id"] for x in m.client.get("/api/v1/engine-profiles").json()}
        if name not in known:
            r = m.client.post("/api/v1/engine-profiles", json={
                "name": name, "cpu": round(node.cpu_capacity * share, 2), "memory_gb": 0.5,
                "gpus": 0})
            assert r.status_code == 201, r.text
            known[name] = r.json()["id"]
        ids[name] = known[name]
    p.settings = p.settings.with_overrides(session_warm_engines=2,
                                           session_warm_profile="warm-share")
    try:
        yield p, ids["big"], {e.workload_id for e in ready_engines(m, 2)}
    finally:
        p.settings = p.settings.with_overrides(session_warm_engines=0, session_warm_profile="")
        p._held_until = 0.0
        p.tick()


def test_warm_engines_give_way_to_a_session_that_needs_their_cpu(master: SwarmMaster) -> None:
    """Warm engines with a profile reserve its CPU on the master's node. A session whose own
    profile needs CPU they hold would find no node: they give way (removed at once), none is
    started again while sessions need it (GIVE_WAY_SECONDS), and the session runs on a cold
    engine. Once no session has needed it for that long, the pool fills again."""
    manager = manager_for(master.api.client.app.state.server)
    with reserving_engines(master) as (p, big, warm):
        sid = master.start(profile_id=big)["id"]  # before: 422, no node has the CPU
        assert not p.engines(), p.engines()  # both gave way ...
        assert master.wait(sid, "running", "failed")["status"] == "running"
        assert workload_of(master, sid) not in warm  # a cold engine of its own profile
        manager.sync()
        p.tick()
        assert not p.engines(), p.engines()  # ... and none comes back meanwhile
        p._held_until = 0.0  # GIVE_WAY_SECONDS later
        p.tick()
        assert p.engines(), "the pool did not fill again"
        assert master.client.post("/api/v1/sessions/%d/stop" % sid).status_code in (200, 202)
        assert master.wait(sid, "stopped", "failed")["status"] == "stopped"


def test_warm_engines_give_way_to_a_job_that_needs_their_cpu(master: SwarmMaster) -> None:
    """A job run needs the CPU too: before, its task waited on the swarm for a node with room
    (or, when the master places it, the run failed with "no node has ... free"), for as long as
    the pool kept its engines. Now the engines give way and the run goes through."""
    user = master.api.user()
    r = master.client.put("/api/v1/projects/%d/collaborators/%d" % (master.project_id, user.id),
                          json={"role": "contributor"})
    assert r.status_code == 200, r.text
    jobs = start_jobs(master.api, threaded=False, user=user, project_id=master.project_id)
    try:
        jobs.script("hello.py", "print('hello from a job')\n")
        with reserving_engines(master) as (p, big, _):
            job = jobs.create(name="needs-cpu", script="hello.py", profile_id=big)
            run = jobs.run(job["id"])
            done = jobs.wait(job["id"], run["id"], tick=True, timeout=240)
            assert done["status"] == "succeeded", (done, jobs.log(job["id"], run["id"]))
            assert jobs.log(job["id"], run["id"]) == "hello from a job\n"
            assert not p.engines(), p.engines()  # they gave way, and stay away meanwhile
    finally:
        scheduler.stop(master.api.client.app.state.server)
