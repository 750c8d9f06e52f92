"""The swarm orchestrator, the cluster API and the worker role on real dockerds.

Hosts are network namespaces on this machine (netns.py), each with its own dockerd started by
the CDSW_DOCKER role. h1 is the swarm manager; the multi-host test adds h2 through the
CDSW_WORKER role and the cluster API.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import requests

from cdsw_agent.orchestrators import (
    FAILED,
    LOST,
    RUNNING,
    SUCCEEDED,
    OrchestratorError,
    Port,
    WorkloadNotFound,
    WorkloadSpec,
)
from cdsw_agent.orchestrators.swarm import SwarmOrchestrator, network_name
from cdsw_agent.roles import swarm as swarm_mgr
from cdsw_agent.settings import load_settings

from .netns import (
    Lab,
    available,
    busybox_rootfs,
    docker_env,
    import_busybox,
    start_docker_role,
    wait_for,
)

pytestmark = pytest.mark.docker

CDSW = str(Path(sys.executable).with_name("cdsw"))
SECRET = "s3cret-for-tests-" + os.urandom(6).hex()
API_PORT = 18443

# The cluster API alone (the full master app needs every route module); same router, same state.
API_SERVER = r"""
import uvicorn
from fastapi import FastAPI
from cdsw_agent.logs import setup_logging
from cdsw_agent.server import errors
from cdsw_agent.server.routes import cluster
from cdsw_agent.server.state import ServerState
from cdsw_agent.settings import load_settings
settings = load_settings()
setup_logging("debug", settings.secret_values())
app = FastAPI()
app.state.server = ServerState.create(settings)
errors.install(app)
app.include_router(cluster.router, prefix="/api/v1")
uvicorn.run(app, host=settings.bind_address, port=settings.http_port, log_config=None)
"""


def master_command() -> list:
    """The real master once app.py serves the cluster routes, else the cluster API alone."""
    from cdsw_agent.server.app import API_ROUTERS

    if "cluster" in API_ROUTERS:
        return [CDSW, "role", "master", "start"]
    return [sys.executable, "-c", API_SERVER]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = available()
    if reason:
        pytest.skip(reason)
    with Lab(Path("/var/lib/cdsw-lab") / os.urandom(3).hex()) as lab:
        yield lab


@pytest.fixture(scope="module")
def manager(lab, tmp_path_factory):
    """h1: dockerd from the docker role, swarm manager, busybox image imported."""
    h1 = lab.add_host("h1")
    _, client = start_docker_role(h1, CDSW)
    tarball = busybox_rootfs(tmp_path_factory.mktemp("image") / "busybox.tar")
    image = import_busybox(client, tarball)
    env = dict(docker_env(h1), CDSW_MASTER_HOST=h1.address, CDSW_CLUSTER_SECRET=SECRET,
               CDSW_BIND_ADDRESS=h1.address, CDSW_HTTP_PORT=str(API_PORT))
    settings = load_settings(environ=env)
    # fast heartbeats so a dead node is noticed in seconds, not tens of seconds
    info = swarm_mgr.ensure_manager(client, settings, dispatcher_heartbeat=1)
    assert info.created
    swarm_mgr.ensure_network(client)
    yield dict(host=h1, client=client, image=image, env=env, settings=settings, tarball=tarball)
    client.close()


@pytest.fixture
def orch(manager):
    o = SwarmOrchestrator(manager["client"], network=swarm_mgr.ENGINE_NETWORK)
    yield o
    for ref in o.list():
        o.remove(ref.id)


def wait_final(orch, wid, timeout=60):
    return wait_for(lambda: orch.status(wid) if orch.status(wid).final else None, timeout,
                    "workload %s to end" % wid)


def job(manager, name, script, **kw):
    return WorkloadSpec(name=name, image=manager["image"], command=["sh", "-c", script], **kw)


# --- swarm manager helpers
def test_ensure_manager_and_network_are_idempotent(manager):
    client, settings = manager["client"], manager["settings"]
    again = swarm_mgr.ensure_manager(client, settings)
    assert not again.created
    assert again.manager_addresses == ["%s:2377" % manager["host"].address]
    net = swarm_mgr.ensure_network(client)
    assert swarm_mgr.ensure_network(client) == net
    attrs = client.api.inspect_network(net)
    assert (attrs["Driver"], attrs["Attachable"]) == ("overlay", True)
    tokens = swarm_mgr.join_tokens(client)
    assert tokens["worker"].startswith("SWMTKN-") and tokens["worker"] != tokens["manager"]


# --- the swarm backend on one node
def test_one_shot_succeeds_with_logs(orch, manager):
    ref = orch.launch(job(manager, "hello", "echo hello $WHO; echo oops >&2",
                          env={"WHO": "swarm"}, labels={"kind": "job"}))
    st = wait_final(orch, ref.id)
    assert (st.state, st.exit_code, st.node) == (SUCCEEDED, 0, "h1")
    assert st.started_at is not None and st.finished_at >= st.started_at
    assert sorted(orch.logs(ref.id)) == ["hello swarm", "oops"]
    service = manager["client"].api.inspect_service(ref.id)
    assert service["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    assert service["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    engines = manager["client"].api.inspect_network(swarm_mgr.ENGINE_NETWORK)["Id"]
    # the Docker role keeps the bridge closed (icc off): no overlay network of its own, which
    # would cost about a second per start; only the one configured for all
    assert not orch.own_networks
    assert [n["Target"] for n in service["Spec"]["TaskTemplate"]["Networks"]] == [engines]
    assert not manager["client"].api.networks(names=[network_name("hello")])
    container = service["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert container["CapabilityDrop"] == ["ALL"] and not container.get("CapabilityAdd")
    orch.remove(ref.id)


def test_a_workload_gets_a_network_of_its_own_where_the_bridge_is_open(orch, manager):
    """A dockerd the role did not configure (icc on) cannot keep engines apart on its bridge:
    each workload then gets an overlay network of its own, removed after it."""
    orch._own_networks = True  # as bridge_isolated() finds on such a dockerd
    ref = orch.launch(job(manager, "apart", "echo apart"))
    assert wait_final(orch, ref.id).state == SUCCEEDED
    service = manager["client"].api.inspect_service(ref.id)
    engines = manager["client"].api.inspect_network(swarm_mgr.ENGINE_NETWORK)["Id"]
    own = manager["client"].api.inspect_network(network_name("apart"))
    assert own["Labels"]["io.cdsw.name"] == "apart" and not own["Attachable"]
    # its own network first (no other workload is on it), then the one configured for all
    assert [n["Target"] for n in service["Spec"]["TaskTemplate"]["Networks"]] == \
        [own["Id"], engines]
    orch.remove(ref.id)
    wait_for(lambda: orch._remove_networks() or not manager["client"].api.networks(
        names=[network_name("apart")]), 60, "the workload's network to go")


def test_follow_streams_until_the_workload_ends(orch, manager):
    ref = orch.launch(job(manager, "ticker", "for i in 1 2 3; do echo tick $i; sleep 1; done"))
    wait_for(lambda: orch.status(ref.id).state != "pending", 30, "the ticker to start")
    assert list(orch.logs(ref.id, follow=True)) == ["tick 1", "tick 2", "tick 3"]
    assert orch.status(ref.id).state == SUCCEEDED


def test_failure_keeps_exit_code(orch, manager):
    ref = orch.launch(job(manager, "fails", "echo about to fail; exit 3"))
    st = wait_final(orch, ref.id)
    assert (st.state, st.exit_code) == (FAILED, 3)
    assert "3" in st.reason
    assert list(orch.logs(ref.id)) == ["about to fail"]
    time.sleep(2)  # restart condition none: the swarm must not run it again
    assert len(manager["client"].api.tasks(filters={"service": ref.id})) == 1


def test_memory_limit_kill_reports_out_of_memory(orch, manager):
    ref = orch.launch(job(manager, "hog", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); "
                          "echo survived", memory_limit=32 << 20))
    st = wait_final(orch, ref.id)
    assert (st.state, st.exit_code, st.reason) == (FAILED, 137, (
        "killed by SIGKILL (out of memory: the engine used more than its 32 MiB profile; "
        "choose a larger profile)"))


def test_long_running_reserves_resources_then_stops(orch, manager):
    before = {n.name: n for n in orch.nodes()}["h1"]
    assert before.state == "ready" and before.cpu_capacity >= 1 and before.memory_capacity > 0
    ref = orch.launch(job(manager, "server", "echo serving; sleep 300", restart="always",
                          cpu_reservation=0.5, memory_reservation=64 << 20, cpu_limit=1.0,
                          ports=[Port(8080, 18080)], labels={"kind": "model"}))
    wait_for(lambda: orch.status(ref.id).state == RUNNING, 60, "the service to run")
    spec = manager["client"].api.inspect_service(ref.id)["Spec"]
    assert spec["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 8080,
                                              "PublishedPort": 18080, "PublishMode": "host"}]
    assert spec["TaskTemplate"]["Resources"] == {
        "Limits": {"NanoCPUs": 1_000_000_000},
        "Reservations": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 << 20}}
    assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "any"
    wait_for(lambda: "serving" in list(orch.logs(ref.id)), 20, "its output")
    node = {n.name: n for n in orch.nodes()}["h1"]
    assert node.cpu_allocated == pytest.approx(before.cpu_allocated + 0.5)
    assert node.memory_allocated == before.memory_allocated + (64 << 20)
    assert [r.id for r in orch.list({"kind": "model"})] == [ref.id]
    orch.stop(ref.id)
    st = wait_final(orch, ref.id, timeout=30)
    assert (st.state, st.reason) == (FAILED, "stopped")
    wait_for(lambda: {n.name: n for n in orch.nodes()}["h1"].cpu_allocated
             == pytest.approx(before.cpu_allocated), 30, "the reservation to be released")
    orch.remove(ref.id)
    with pytest.raises(WorkloadNotFound):
        orch.status(ref.id)


def test_names_are_unique_and_foreign_services_are_invisible(orch, manager):
    orch.launch(job(manager, "twin", "sleep 30"))
    with pytest.raises(OrchestratorError, match="already exists"):
        orch.launch(job(manager, "twin", "true"))
    client = manager["client"]
    foreign = client.services.create(manager["image"], ["sleep", "30"], name="not-cdsw")
    try:
        assert "not-cdsw" not in [r.name for r in orch.list()]
        with pytest.raises(WorkloadNotFound):
            orch.stop(foreign.id)
    finally:
        foreign.remove()


def test_start_manager_is_what_the_master_calls(manager):
    info = swarm_mgr.start_manager(manager["settings"])
    assert info is not None and not info.created
    assert swarm_mgr.start_manager(manager["settings"].with_overrides(orchestrator="local")) is None


def test_worker_prepare_and_status(manager):
    from cdsw_agent.roles import worker

    problems = worker.prepare(manager["settings"].with_overrides(cluster_secret=""))
    assert len(problems) == 1 and "cluster_secret is empty" in problems[0]
    assert worker.prepare(manager["settings"]) == []
    # h1 is the manager: an active swarm member; a dead socket is not
    assert worker.status(manager["settings"])
    assert not worker.status(manager["settings"].with_overrides(
        docker_host="unix:///nonexistent/docker.sock"))


# --- the cluster API in-process (secret checks, no secret in logs)
def test_cluster_api_checks_the_secret_and_never_logs_it(manager, caplog):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from cdsw_agent.server import errors
    from cdsw_agent.server.routes import cluster
    from cdsw_agent.server.state import ServerState

    app = FastAPI()
    app.state.server = ServerState.create(manager["settings"].with_overrides(
        data_dir=str(manager["host"].root / "api")))
    app.state.server.db.upgrade()
    errors.install(app)
    app.include_router(cluster.router, prefix="/api/v1")
    caplog.set_level(logging.DEBUG)
    with TestClient(app) as http:
        r = http.post("/api/v1/cluster/join", json={"secret": "wrong", "hostname": "x"})
        assert r.status_code == 403 and r.json()["error"] == "wrong cluster secret"
        r = http.post("/api/v1/cluster/heartbeat", json={"secret": SECRET[:-1], "hostname": "x"})
        assert r.status_code == 403
        r = http.post("/api/v1/cluster/join", json={"secret": SECRET, "hostname": "w1"})
        assert r.status_code == 200
        assert r.json() == {"join_token": swarm_mgr.join_tokens(manager["client"])["worker"],
                            "manager_addresses": ["%s:2377" % manager["host"].address]}
        r = http.post("/api/v1/cluster/heartbeat", json={
            "secret": SECRET, "hostname": "w1", "cpus": 2, "memory_bytes": 1 << 30,
            "checks": {"docker": "ok"}})
        assert r.status_code == 200
        with app.state.server.db.session() as db:
            assert cluster._nodes(db)["w1"]["memory_bytes"] == 1 << 30
        # the CDSW nodes for the workers' engine firewall: the swarm's nodes (here the manager
        # h1) with the host addresses their heartbeats reported; w1 is no swarm node (yet), so
        # its addresses do not count
        for hostname, address in (("h1", "10.254.1.1"), ("w1", "10.254.1.2")):
            r = http.post("/api/v1/cluster/heartbeat", json={
                "secret": SECRET, "hostname": hostname, "addresses": [address]})
            assert r.status_code == 200, r.text
        r = http.post("/api/v1/cluster/engine-nodes", json={"secret": SECRET[:-1],
                                                             "hostname": "w1"})
        assert r.status_code == 403
        r = http.post("/api/v1/cluster/engine-nodes", json={"secret": SECRET, "hostname": "w1"})
        assert r.status_code == 200, r.text
        nodes = r.json()["engine_nodes"]
        assert manager["host"].address in nodes and "10.254.1.1" in nodes, nodes
        assert "10.254.1.2" not in nodes, nodes
        r = http.post("/api/v1/cluster/heartbeat", json={
            "secret": SECRET, "hostname": "w1", "addresses": ["10.254.1.2 -j ACCEPT"]})
        assert r.status_code == 422, r.text
        r = http.post("/api/v1/cluster/leave", json={"secret": SECRET, "hostname": "w1",
                                                      "node_id": "nosuchnode"})
        assert r.status_code == 404
        r = http.post("/api/v1/cluster/join", json={"hostname": "w1"})
        assert r.status_code == 422
    assert SECRET not in caplog.text


# --- two hosts: the worker role joins, work is placed on it, its death is noticed
@pytest.mark.slow
def test_worker_joins_runs_work_and_loss_is_detected(lab, manager):
    h1 = manager["host"]
    orch = SwarmOrchestrator(manager["client"], network=swarm_mgr.ENGINE_NETWORK)
    api = h1.popen(master_command(), env=manager["env"], log_name="api.log")
    h2 = lab.add_host("h2")
    docker2, client2 = start_docker_role(h2, CDSW)
    import_busybox(client2, manager["tarball"])
    url = "http://%s:%d/api/v1/cluster" % (h1.address, API_PORT)
    wait_for(lambda: api.poll() is None and requests.post(url + "/join", json={
        "secret": "x", "hostname": "probe"}, timeout=2).status_code == 403, 30,
        "the cluster API (log: %s)" % h1.log("api.log")[-300:])
    worker_env = dict(docker_env(h2), CDSW_MASTER_HOST=h1.address, CDSW_HTTP_PORT=str(API_PORT),
                      CDSW_CLUSTER_SECRET=SECRET, CDSW_WORKER_HEARTBEAT_SECONDS="1")
    try:
        # a wrong secret is refused, said in one line, and not echoed
        wrong = "wrong-" + SECRET
        r = h2.run([CDSW, "role", "worker", "start"], env=dict(worker_env,
                                                               CDSW_CLUSTER_SECRET=wrong))
        assert r.returncode == 1 and "rejected this worker's cluster secret" in r.stderr
        assert wrong not in r.stderr + r.stdout
        assert client2.info()["Swarm"]["LocalNodeState"] == "inactive"

        worker = h2.popen([CDSW, "role", "worker", "start"], env=worker_env, log_name="worker.log")

        def h2_node():
            return {n.name: n for n in orch.nodes()}.get("h2")

        node = wait_for(lambda: (h2_node() if h2_node() and h2_node().state == "ready" else None),
                        60, "h2 to join (worker log: %s)" % h2.log("worker.log")[-500:])
        assert node.role == "worker" and node.address == h2.address
        assert h2.run([CDSW, "role", "worker", "status"], env=worker_env).returncode == 0

        # a crashed worker comes back and keeps its membership
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        worker = h2.popen([CDSW, "role", "worker", "start"], env=worker_env, log_name="worker.log")
        time.sleep(3)
        assert worker.poll() is None, h2.log("worker.log")[-500:]
        assert [n.id for n in orch.nodes() if n.name == "h2"] == [node.id]

        # placement: a node constraint and a reservation land the work on h2
        ref = orch.launch(WorkloadSpec(name="on-h2", image=manager["image"],
                                       command=["sh", "-c", "echo on $(hostname); sleep 300"],
                                       node="h2", cpu_reservation=0.25,
                                       memory_reservation=32 << 20))
        st = wait_for(lambda: orch.status(ref.id) if orch.status(ref.id).state == RUNNING
                      else None, 60, "the workload to run on h2")
        assert st.node == "h2"
        assert h2_node().cpu_allocated == pytest.approx(0.25)
        wait_for(lambda: any(line.startswith("on ") for line in orch.logs(ref.id)), 20,
                 "logs from h2")

        # h2's dockerd dies: its node goes down and the workload is lost, with the reason
        os.kill(docker2.pid, signal.SIGKILL)
        docker2.wait(10)
        st = wait_for(lambda: orch.status(ref.id) if orch.status(ref.id).state == LOST else None,
                      90, "the workload to be reported lost")
        assert "h2" in st.reason and "down" in st.reason
        assert h2_node().state == "down"

        # dockerd back (same data root): the node rejoins by itself; SIGTERM drains and leaves
        docker2, client2 = start_docker_role(h2, CDSW)
        wait_for(lambda: h2_node().state == "ready", 60, "h2 to be ready again")
        worker.send_signal(signal.SIGTERM)
        worker.wait(90)
        assert worker.returncode == 0, h2.log("worker.log")[-800:]
        assert h2_node().availability == "drain"
        assert client2.info()["Swarm"]["LocalNodeState"] == "inactive"
        wait_for(lambda: h2_node().state == "down", 60, "h2 to be down after leaving")
        assert SECRET not in h2.log("worker.log") and SECRET not in h1.log("api.log")
    finally:
        for ref in orch.list():
            orch.remove(ref.id)
