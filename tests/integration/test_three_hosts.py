"""Three gateway hosts on this machine, set up exactly as an admin's cluster manager would.

h1, h2 and h3 are network namespaces, each with its own dockerd from the CDSW_DOCKER role
(`cdsw role docker start`); h1 runs CDSW_MASTER (`cdsw role master start`), h2 and h3 run
CDSW_WORKER (`cdsw role worker start`). The engine image is built once per run on the test
dockerd (docker_fixtures.engine_image), copied onto h1 only; the workers must get it from the
master through the cluster API (POST /api/v1/cluster/images, /images/export).

Placement by reservations: every node reports this machine's CPUs (2). A "master reservation"
pinned to h1 holds half of h1's CPUs (the idea of CDSW's RESERVE_MASTER: engines should not run
on the master), so an engine reserving 1.5 CPUs fits only on a worker, and two of them fill
one worker each.

What this test cannot show: all namespaces share one file system (only the network is
separate), so a worker's dockerd bind-mounts the project folder and the client configuration
bundle straight from the master's data directory. It proves that engines placed on workers get
the right mounts and environment and read the files, not that the files crossed the network
(the sshfs path is tested on its own in test_storage_mount.py; storage_backend=local here).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import requests

from cdsw_agent.clientconfig import SparkPorts, bundles_dir, collect, current, engine_mounts_and_env
from cdsw_agent.images import transfer
from cdsw_agent.images.recipe import ENGINE_UID
from cdsw_agent.orchestrators import LOST, RUNNING, WorkloadSpec, get_orchestrator
from cdsw_agent.settings import load_settings
from cdsw_agent.storage import engine_mount

from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .netns import Host, Lab, available, docker_env, start_docker_role, wait_for
from .spark_fixtures import (describe, hosts_file, java_home, java_options, parcels_dir,
                             start_standalone)
from .test_sessions_swarm import PROBE as SOCKET_PROBE

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

CDSW = str(Path(sys.executable).with_name("cdsw"))
SECRET = "three-hosts-" + os.urandom(8).hex()
PORT = 18543
ADMIN, PASSWORD = "admin3h", "pw-" + os.urandom(6).hex()
CPUS = 2.0  # what every dockerd here reports (asserted below)
ENGINE_CPU = 1.5  # fits a worker, not the master's node once its reservation is made
MASTER_RESERVATION = 1.0


def base_env(lab_root: Path) -> Dict[str, str]:
    """The roles' environment: no CDSW_* from outside, no system config files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    (lab_root / "empty.conf").write_text("")
    (lab_root / "empty.properties").write_text("")
    env.update(CDSW_CONF=str(lab_root / "empty.conf"),
               CDSW_PROPERTIES=str(lab_root / "empty.properties"),
               CDSW_ORCHESTRATOR="swarm", CDSW_CLUSTER_SECRET=SECRET,
               CDSW_HTTP_PORT=str(PORT), CDSW_STORAGE_BACKEND="local",
               CDSW_ARGON2_TIME_COST="1", CDSW_ARGON2_MEMORY_KIB="1024",
               CDSW_WORKER_HEARTBEAT_SECONDS="2",
               # the cluster's clients as a Cloudera Manager gateway has them: Spark 3 as a
               # parcel (spark_fixtures) and Debian's OpenJDK
               CDSW_CLUSTER_CLIENT_KIND="cm-parcels", CDSW_CLUSTER_CLIENT_DIRS=str(parcels_dir()),
               CDSW_JAVA_HOME=java_home() or "")
    return env


class Cluster:
    def __init__(self, lab: Lab, engine: str):
        self.lab, self.engine = lab, engine
        self.h1, self.h2, self.h3 = (lab.add_host(n) for n in ("h1", "h2", "h3"))
        common = base_env(lab.root)
        self.master_env = dict(common, **docker_env(self.h1), CDSW_MASTER_HOST=self.h1.address,
                               CDSW_BIND_ADDRESS=self.h1.address)
        self.worker_env = {h.name: dict(common, **docker_env(h), CDSW_MASTER_HOST=self.h1.address)
                           for h in (self.h2, self.h3)}
        self.settings = load_settings(environ=self.master_env)
        self.docker: Dict[str, Any] = {}  # host name -> (role process, client)
        self.workers: Dict[str, Any] = {}
        self.master: Any = None
        self.url = "http://%s:%d" % (self.h1.address, PORT)

    def start_docker(self, host: Host) -> Any:
        self.docker[host.name] = start_docker_role(host, CDSW)
        return self.docker[host.name][1]

    def start_master(self) -> None:
        self.master = self.h1.popen([CDSW, "role", "master", "start"], env=self.master_env,
                                    log_name="master.log")
        wait_for(lambda: self._master_up(), 90, "the master API")

    def _master_up(self) -> bool:
        if self.master.poll() is not None:
            raise AssertionError("master exited %s: %s" % (self.master.returncode,
                                                           self.h1.log("master.log")[-1500:]))
        return requests.get(self.url + "/healthz", timeout=2).status_code == 200

    def start_worker(self, host: Host) -> None:
        self.workers[host.name] = host.popen([CDSW, "role", "worker", "start"],
                                             env=self.worker_env[host.name], log_name="worker.log")

    def cli(self, *argv: str) -> subprocess.CompletedProcess:
        return self.h1.run([CDSW] + list(argv), env=self.master_env, timeout=120)

    def nodes(self) -> Dict[str, Any]:
        return {n.name: n for n in self.orch.nodes()}

    def workers_ready(self) -> None:
        """h2 and h3 run their dockerd and worker role (started again if a test before left
        them dead, so its failure does not cascade), are ready swarm nodes and hold the engine
        image."""
        for host in (self.h2, self.h3):
            if self.docker[host.name][0].poll() is not None:
                self.start_docker(host)
            if host.name not in self.workers or self.workers[host.name].poll() is not None:
                self.start_worker(host)
        wait_for(lambda: all(self.node_state(h) == "ready" for h in ("h2", "h3")), 120,
                 "h2 and h3 to be ready")
        for host in (self.h2, self.h3):
            wait_for(lambda: self.docker[host.name][1].images.list(
                name=self.engine.split(":")[0]), 240, "the engine image on %s" % host.name)

    def node_state(self, name: str) -> str:
        node = self.nodes().get(name)
        return node.state if node else "absent"

    @property
    def orch(self) -> Any:
        if not hasattr(self, "_orch"):
            self._orch = get_orchestrator(self.settings)
        return self._orch


@pytest.fixture(scope="module")
def cluster(engine_image: str, docker_engine: Any, tmp_path_factory: Any  # noqa: F811
            ) -> Iterator[Cluster]:
    reason = available()
    if reason:
        pytest.skip(reason)
    saved = transfer.save_image(docker_engine.client, engine_image,
                                tmp_path_factory.mktemp("engine") / "engine.tar")
    with Lab(Path("/var/lib/cdsw-lab") / ("3h-" + os.urandom(3).hex())) as lab:
        c = Cluster(lab, engine_image)
        try:
            for host in (c.h1, c.h2, c.h3):
                c.start_docker(host)
            # only the master has the engine image; the workers must fetch it from it
            assert transfer.load_image(c.docker["h1"][1], saved.path) == [engine_image]
            for host in (c.h2, c.h3):
                assert not c.docker[host.name][1].images.list(name=engine_image.split(":")[0])
            c.start_master()
            yield c
        finally:
            try:
                for ref in c.orch.list():
                    c.orch.remove(ref.id)
            except Exception:
                pass
            for name in ("master.log", "docker-role.log"):
                print("--- h1 %s (tail)\n%s" % (name, c.h1.log(name)[-3000:]))
            for host in (c.h2, c.h3):
                print("--- %s worker.log (tail)\n%s" % (host.name, host.log("worker.log")[-3000:]))


def engine_spec(c: Cluster, name: str, project_id: int, script: str, port: int) -> WorkloadSpec:
    """An engine as the product would launch it: project at /home/cdsw, client configs."""
    spec = WorkloadSpec(name=name, image=c.engine, command=["sh", "-c", script],
                        mounts=[engine_mount(c.settings, project_id)], workdir="/home/cdsw",
                        cpu_reservation=ENGINE_CPU, labels={"kind": "session"})
    bundle = current(bundles_dir(c.settings))
    config = engine_mounts_and_env(bundle, c.settings, c.h1.address, SparkPorts(port, port + 1),
                                   Path(c.settings.data_dir) / "engines" / name)
    return config.apply(spec)


def running(c: Cluster, wid: str, timeout: float = 120) -> Any:
    def check() -> Any:
        st = c.orch.status(wid)
        assert st.state in ("pending", RUNNING), "%s ended: %s %s" % (wid, st.state, st.reason)
        return st if st.state == RUNNING else None
    return wait_for(check, timeout, "workload %s to run" % wid)


def test_three_gateways(cluster: Cluster) -> None:
    c = cluster
    # --- workers join through the role command, and fetch the engine image from the master
    for host in (c.h2, c.h3):
        c.start_worker(host)
    wait_for(lambda: all(c.node_state(h) == "ready" for h in ("h2", "h3")), 120,
             "h2 and h3 to join (logs: %s / %s)" % (c.h2.log("worker.log")[-400:],
                                                    c.h3.log("worker.log")[-400:]))
    nodes = c.nodes()
    assert {n: nodes[n].role for n in nodes} == {"h1": "manager", "h2": "worker", "h3": "worker"}
    assert all(n.cpu_capacity == CPUS for n in nodes.values())
    image_id = c.docker["h1"][1].images.get(c.engine).id
    for host in (c.h2, c.h3):
        wait_for(lambda: "engine image %s loaded from the master" % c.engine
                 in host.log("worker.log"), 240,
                 "the engine image on %s (log: %s)" % (host.name, host.log("worker.log")[-600:]))
        assert c.docker[host.name][1].images.get(c.engine).id == image_id

    # --- a project with a file, through the master's API as an admin made with the CLI
    r = subprocess.run(c.h1.wrap([CDSW, "admin", "create-user", ADMIN, "--admin",
                                  "--password-stdin"]), input=PASSWORD + "\n", text=True,
                       capture_output=True, env=dict(os.environ, **c.master_env), timeout=60)
    assert r.returncode == 0, r.stderr
    http = requests.Session()
    r = http.post(c.url + "/api/v1/auth/signin", json={"username": ADMIN, "password": PASSWORD})
    assert r.status_code == 200, r.text
    http.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    r = http.post(c.url + "/api/v1/projects", json={"name": "three-hosts"})
    assert r.status_code == 201, r.text
    project = r.json()["id"]
    marker = "project file " + os.urandom(4).hex()
    r = http.put(c.url + "/api/v1/projects/%d/files/content" % project,
                 json={"path": "hello.txt", "content": marker + "\n"})
    assert r.status_code == 200, r.text

    # --- the client configuration the cluster manager deployed, collected on the master
    conf = c.lab.root / "hadoop-conf"
    conf.mkdir()
    site = "<configuration><property><name>fs.defaultFS</name><value>hdfs://nn-%s:8020</value>" \
           "</property></configuration>\n" % os.urandom(3).hex()
    (conf / "core-site.xml").write_text(site)
    collect([conf], bundles_dir(c.settings))

    # --- placement by reservation: the master's node is reserved, engines go to the workers
    reserve = c.orch.launch(WorkloadSpec(name="master-reservation", image=c.engine,
                                         command=["sleep", "3600"], node="h1",
                                         cpu_reservation=MASTER_RESERVATION, restart="always"))
    running(c, reserve.id)
    script = "cat /home/cdsw/hello.txt; cat $HADOOP_CONF_DIR/core-site.xml; id -u;" \
             " sleep 3600"
    first = c.orch.launch(engine_spec(c, "engine-a", project, script, 20100))
    placed = {running(c, first.id).node: first.id}
    second = c.orch.launch(engine_spec(c, "engine-b", project, script, 20110))
    placed[running(c, second.id).node] = second.id
    assert sorted(placed) == ["h2", "h3"]  # one per worker, none on the master
    for wid in placed.values():  # as the engine user, not root
        # (swarm service logs do not keep the order of lines written in the same instant)
        wait_for(lambda: len(list(c.orch.logs(wid))) >= 3, 60, "engine output")
        assert sorted(c.orch.logs(wid)) == sorted([marker, site.strip(), str(ENGINE_UID)])
    assert c.nodes()["h1"].cpu_allocated == MASTER_RESERVATION

    # --- h2's dockerd dies: node down in status and health, its engine lost, work goes to h3
    docker2 = c.docker["h2"][0]
    os.kill(docker2.pid, signal.SIGKILL)
    docker2.wait(10)
    lost = wait_for(lambda: c.orch.status(placed["h2"]) if c.orch.status(placed["h2"]).state
                    == LOST else None, 120, "the engine on h2 to be reported lost")
    assert "h2" in lost.reason and "down" in lost.reason, lost.reason
    assert c.node_state("h2") == "down"
    r = c.cli("status")
    lines = r.stdout.splitlines()
    assert next(ln for ln in lines if ln.strip().startswith("h2")).split()[2] == "down", r.stdout
    assert "Nodes: 2 of 3 ready" in lines, r.stdout
    # a down worker degrades the cluster but does not make it unusable (tests/unit/test_status)
    assert r.returncode == 0 and lines[-1].startswith("CDSW is ready: 2 nodes ready"), r.stdout
    r = c.cli("health", "--check", "swarm_nodes")
    assert r.returncode == 1 and "h2 (down)" in r.stdout, r.stdout + r.stderr  # WARNING
    c.orch.remove(placed["h3"])  # frees h3: the only node a 1.5-CPU engine can go now
    third = c.orch.launch(engine_spec(c, "engine-c", project, script, 20120))
    st = running(c, third.id)
    assert st.node == "h3"
    wait_for(lambda: marker in c.orch.logs(third.id), 60, "engine-c output")

    # --- h2's dockerd is back: the node rejoins by itself, its worker role never stopped
    c.start_docker(c.h2)
    wait_for(lambda: c.node_state("h2") == "ready", 120, "h2 to be ready again")
    assert c.workers["h2"].poll() is None, c.h2.log("worker.log")[-800:]
    assert c.docker["h2"][1].images.get(c.engine).id == image_id
    wait_for(lambda: c.cli("health", "--check", "swarm_nodes").returncode == 0, 60,
             "swarm_nodes to be OK again")

    # --- the master restarts: running engines keep running, untouched, and are still seen
    before = {wid: c.orch.status(wid) for wid in (reserve.id, third.id)}
    c.master.send_signal(signal.SIGTERM)
    assert c.master.wait(60) == 0, c.h1.log("master.log")[-1500:]
    c.start_master()
    for wid, st in before.items():
        now = c.orch.status(wid)
        assert (now.state, now.node, now.started_at) == (RUNNING, st.node, st.started_at)
    assert len(c.docker["h3"][1].containers.list(
        filters={"label": "com.docker.swarm.service.id=%s" % third.id})) == 1
    r = c.cli("status")
    assert third.id in r.stdout and "Nodes: 3 of 3 ready" in r.stdout, r.stdout
    # workers heartbeat to the restarted master again
    r = http.get(c.url + "/api/v1/cluster/nodes")
    assert r.status_code == 200
    wait_for(lambda: {n["hostname"] for n in http.get(c.url + "/api/v1/cluster/nodes").json()
                      ["nodes"]} >= {"h2", "h3"}, 30, "heartbeats to the restarted master")
    assert SECRET not in c.h1.log("master.log") + c.h2.log("worker.log") + c.h3.log("worker.log")

    # --- a job pipeline through the API, as a user runs it: the product's own engine builder
    # places both runs on a worker (the only node with room for their profile) with the project
    # files and the collected client configuration
    profile = pipeline_on_workers(c, http, project, marker, site)

    # --- a session and a model with two replicas on the workers: h3's engine makes room first
    c.orch.remove(third.id)
    session_on_a_worker(c, http, project, profile, marker)
    model_spread_over_workers(c, http, project, profile)


def api_ok(r: requests.Response, *codes: int) -> Any:
    assert r.status_code in codes, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                        r.status_code, r.text[:500])
    return r.json() if r.content else None


def pipeline_on_workers(c: Cluster, http: requests.Session, project: int, marker: str,
                        site: str) -> int:
    """Returns the id of the worker-sized profile it made."""
    repository, tag = c.engine.rsplit(":", 1)
    api_ok(http.post(c.url + "/api/v1/engine-images", json={
        "repository": repository, "tag": tag, "is_default": True}), 201)
    profile = api_ok(http.post(c.url + "/api/v1/engine-profiles", json={
        "name": "worker-sized", "cpu": ENGINE_CPU, "memory_gb": 0.5}), 201)["id"]
    jobs = c.url + "/api/v1/projects/%d/jobs" % project
    api_ok(http.put(c.url + "/api/v1/projects/%d/files/content" % project, json={
        "path": "extract.sh", "content": "cat hello.txt; cat \"$HADOOP_CONF_DIR/core-site.xml\";"
        " echo user=$HADOOP_USER_NAME; echo extracted > stage.txt\n"}), 200)
    api_ok(http.put(c.url + "/api/v1/projects/%d/files/content" % project, json={
        "path": "report.sh", "content": "cat stage.txt\n"}), 200)
    first = api_ok(http.post(jobs, json={"name": "extract", "script": "extract.sh",
                                         "profile_id": profile}), 201)
    second = api_ok(http.post(jobs, json={"name": "report", "script": "report.sh",
                                          "profile_id": profile,
                                          "parent_job_id": first["id"]}), 201)
    api_ok(http.post("%s/%d/runs" % (jobs, first["id"])), 201)

    def finished(job_id: int) -> Any:
        runs = api_ok(http.get("%s/%d/runs" % (jobs, job_id)), 200)
        return runs[0] if runs and runs[0]["status"] not in ("queued", "running") else None

    for job in (first, second):
        run = wait_for(lambda: finished(job["id"]), 240, "job %s to finish" % job["name"])
        log = http.get("%s/%d/runs/%d/log" % (jobs, job["id"], run["id"])).text
        assert run["status"] == "succeeded", (run, log[-1500:])
        assert run["node"] in ("h2", "h3"), run  # the master's node has no room for the profile
        if job is first:
            assert marker in log and site.strip() in log and "user=%s" % ADMIN in log, log
        else:
            assert "extracted" in log, log
    return profile


def session_on_a_worker(c: Cluster, http: requests.Session, project: int, profile: int,
                        marker: str) -> None:
    """The router reaches the engine's jupyter_server on the worker's published port."""
    s = api_ok(http.post(c.url + "/api/v1/projects/%d/sessions" % project,
                         json={"profile_id": profile}), 201)
    url = c.url + "/api/v1/sessions/%d" % s["id"]
    s = wait_for(lambda: (lambda x: x if x["status"] != "starting" else None)(
        api_ok(http.get(url), 200)), 240, "the session to start")
    assert s["status"] == "running" and s["node"] in ("h2", "h3"), s
    r = http.post(url + "/execute", json={"code": "print(open('hello.txt').read().strip())\n"
                                                  "import os; print(os.environ['HADOOP_USER_NAME'])\n1+1"},
                  stream=True)
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.iter_lines() if line]
    text = "".join(e.get("text", "") for e in events)
    assert text == "%s\n%s\n" % (marker, ADMIN), events
    assert any(e["type"] == "execute_result" and e["data"]["text/plain"] == "2" for e in events)
    api_ok(http.post(url + "/stop"), 200)
    wait_for(lambda: api_ok(http.get(url), 200)["status"] == "stopped", 60, "the session to stop")


def model_spread_over_workers(c: Cluster, http: requests.Session, project: int,
                              profile: int) -> None:
    """Two replicas, one per worker (each fits only one); the master's router uses both."""
    api_ok(http.put(c.url + "/api/v1/projects/%d/files/content" % project, json={
        "path": "model.py", "content": "import socket\n\ndef predict(args):\n"
        "    return {'double': 2 * args['x'], 'host': socket.gethostname()}\n"}), 200)
    base = c.url + "/api/v1/projects/%d/models" % project
    model = api_ok(http.post(base, json={"name": "doubler", "file": "model.py",
                                         "function": "predict"}), 201)
    one = "%s/%d" % (base, model["id"])
    build = api_ok(http.post(one + "/builds"), 201)
    build = wait_for(lambda: (lambda b: b if b["status"] not in ("queued", "building") else None)(
        api_ok(http.get("%s/builds/%d" % (one, build["id"])), 200)), 300, "the model build")
    assert build["status"] == "succeeded", http.get("%s/builds/%d/log" % (one, build["id"])).text
    api_ok(http.post(one + "/deployment", json={"replicas": 2, "profile_id": profile}), 201)

    def ready() -> Any:
        replicas = api_ok(http.get(one + "/replicas"), 200)
        live = [r for r in replicas if r["state"] == "ready"]
        return live if len(live) == 2 else None
    try:
        replicas = wait_for(ready, 300, "two ready replicas (the build image reaches the workers)")
    except AssertionError as e:
        raise AssertionError("%s\nreplicas: %s\ndeployments: %s\nswarm: %s" % (
            e, http.get(one + "/replicas").text, http.get(one + "/deployments").text,
            swarm_state(c)))
    assert sorted(r["node"] for r in replicas) == ["h2", "h3"], replicas
    for x in range(10):
        r = requests.post(c.url + "/model", json={"accessKey": model["access_key"],
                                                  "request": {"x": x}}, timeout=30)
        assert r.status_code == 200 and r.json()["success"], r.text
        assert r.json()["response"]["double"] == 2 * x
    counts = {r["node"]: r for r in api_ok(http.get(one + "/replicas"), 200)
              if r["state"] == "ready"}
    assert sum(r["successes"] for r in counts.values()) == 10, counts
    assert all(r["requests"] > 0 for r in counts.values()), counts  # balanced over both
    r = requests.post(c.url + "/model", json={"accessKey": "wrong", "request": {"x": 1}},
                      timeout=30)
    assert r.status_code == 401 and not r.json()["success"]
    api_ok(http.post(one + "/deployment/stop"), 200)


def swarm_state(c: Cluster) -> str:
    """Services, their tasks and the nodes' reservations, for a failure message."""
    client = c.docker["h1"][1]
    lines = []
    for node in client.nodes.list():
        spec, desc = node.attrs["Spec"], node.attrs["Description"]
        lines.append("node %s %s %s cpus=%s" % (desc.get("Hostname"), node.attrs["Status"]["State"],
                                                spec.get("Availability"),
                                                desc["Resources"].get("NanoCPUs", 0) / 1e9))
    for svc in client.services.list():
        task_spec = svc.attrs["Spec"]["TaskTemplate"]
        lines.append("service %s constraints=%s reserve=%s" % (
            svc.name, task_spec.get("Placement", {}).get("Constraints"),
            task_spec.get("Resources", {}).get("Reservations")))
        for t in svc.tasks():
            lines.append("  task %s desired=%s state=%s node=%s err=%s msg=%s" % (
                t["ID"][:10], t["DesiredState"], t["Status"]["State"], t.get("NodeID", "")[:10],
                t["Status"].get("Err"), t["Status"].get("Message")))
    return "\n".join(lines)


# --- Spark: a standalone master and worker on two more hosts, drivers in engines on workers

SPARK_SESSION_CODE = """\\
import shutil, pyspark
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName(%r).getOrCreate()
print(spark.range(0, 100000, numPartitions=4).selectExpr("sum(id) AS s").collect()[0].s)
print(pyspark.__file__)
print(" ".join(shutil.which(c) or "-" for c in ("spark-submit", "pyspark", "spark-shell", "java")))
print(spark.conf.get("spark.driver.host"))
print(spark.sparkContext.applicationId)
"""


def signed_in(c: Cluster) -> requests.Session:
    """The admin of test_three_gateways (made here when that test did not run first)."""
    subprocess.run(c.h1.wrap([CDSW, "admin", "create-user", ADMIN, "--admin", "--password-stdin"]),
                   input=PASSWORD + "\n", text=True, capture_output=True,
                   env=dict(os.environ, **c.master_env), timeout=60)
    http = requests.Session()
    r = http.post(c.url + "/api/v1/auth/signin", json={"username": ADMIN, "password": PASSWORD})
    assert r.status_code == 200, r.text
    http.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return http


LISTENER = """
import socket, sys, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.close()
for port in sys.argv[2:]:
    threading.Thread(target=serve, args=(int(port),), daemon=True).start()
serve(int(sys.argv[1]))
"""
# the sessions test's probe, over the HOST:PORT arguments: "open" or the error's name each
PROBE = SOCKET_PROBE + """
import sys
print(" ".join(probe(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[1:]))
"""


def test_engines_reach_the_engine_port_range_on_hadoop_hosts_but_no_cdsw_node(
        cluster: Cluster) -> None:
    """HBase (16020), the CDH Spark History Server (18088) and friends listen in the engines'
    port range on the cluster's hosts. Once the master (h1) and the workers (h2, h3) know the
    CDSW nodes, an engine reaches those ports on a host that is no CDSW node; it still cannot
    reach another engine's published port on its own node, on another CDSW node, nor the
    master's port (18543) on the master's node. Real iptables rules from the roles, real
    dockerd, real swarm."""
    import secrets as _secrets

    from cdsw_agent.orchestrators import Port
    from cdsw_agent.roles.engine_firewall import CHAIN, NODES_CHAIN, chain_rules

    c = cluster
    python = "/opt/cdsw/venv/bin/python"
    if not c.workers:  # before the workers learn the nodes, their Docker role's rule is broad
        for host in (c.h2, c.h3):
            r = host.run(["iptables", "-w", "-C", CHAIN] + chain_rules()[0])
            assert r.returncode == 0, r.stderr
    c.workers_ready()
    cdsw_nodes = [h.address for h in (c.h1, c.h2, c.h3)]
    for host, role in ((c.h1, "master.log"), (c.h2, "worker.log"), (c.h3, "worker.log")):
        # every node's role narrowed its rule: this node and the three CDSW nodes
        wait_for(lambda: all("-d %s/32 -j DROP" % a in host.run(
            ["iptables", "-w", "-S", NODES_CHAIN]).stdout for a in cdsw_nodes), 60,
            "%s's engine rule narrowed to %s (log: %s)" % (host.name, cdsw_nodes,
                                                           host.log(role)[-600:]))
        assert host.run(["iptables", "-w", "-C", CHAIN] + chain_rules([])[0]).returncode == 0
        assert "engines reach ports 15000-19999 on any host but this node and the CDSW " \
               "nodes" in host.log(role)

    hadoop = c.lab.add_host("hbase-%s" % _secrets.token_hex(2))  # no CDSW node
    services = hadoop.popen([sys.executable, "-c", LISTENER, "16020", "18088"],
                            log_name="hbase.log")
    port_a = 15100 + _secrets.randbelow(800)
    port_b = port_a + 1000
    engines = [c.orch.launch(WorkloadSpec(
        name="fw-%s-%s" % (node, _secrets.token_hex(3)), image=c.engine,
        command=[python, "-c", LISTENER, str(port)], ports=[Port(container=port, host=port)],
        node=node)) for node, port in (("h2", port_a), ("h3", port_b))]
    prober = None
    try:
        for ref in engines:
            running(c, ref.id)
        targets = ["%s:%d" % t for t in ((hadoop.address, 16020), (hadoop.address, 18088),
                                         (c.h3.address, port_b), (c.h2.address, port_a),
                                         (c.h1.address, PORT))]

        def from_h1() -> str:
            return c.h1.run([sys.executable, "-c", PROBE] + targets).stdout.strip()
        # from a host process (as the master reaches engines) every target answers
        wait_for(lambda: from_h1() == "open open open open open", 90,
                 "the listeners to answer h1 (%s)" % from_h1())

        # an engine on h3 probes them all
        prober = c.orch.launch(WorkloadSpec(
            name="fw-probe-%s" % _secrets.token_hex(3), image=c.engine,
            command=[python, "-c", PROBE] + targets, node="h3"))
        st = wait_for(lambda: (lambda x: x if x.final else None)(c.orch.status(prober.id)),
                      120, "the probing engine to finish")
        lines = [ln for ln in c.orch.logs(prober.id) if ln.strip()]
        assert lines, st
        hbase, history, own_node, other_node, master_node = lines[-1].split()
        assert (hbase, history) == ("open", "open"), lines  # Hadoop's ports: no wall any more
        assert own_node != "open", lines  # another engine on its own node, via the node address
        assert other_node != "open", lines  # another engine on another CDSW node
        assert master_node != "open", lines  # the master's node is a CDSW node too
    finally:
        services.terminate()
        for ref in engines + ([prober] if prober else []):
            c.orch.remove(ref.id)


@pytest.mark.timeout(1500)  # a Spark cluster, two sessions and two jobs; the lab goes after it
def test_pyspark_from_engines_on_a_spark_standalone_cluster(cluster: Cluster) -> None:
    """A session and jobs on swarm workers run Spark in client mode against a real standalone
    master: the executors run on the Spark worker host and connect back to the driver in the
    engine container (spark.driver.host is the engine's node, its ports published there); the
    same from a Scala session (the Scala kernel over Spark's REPL), with completion."""
    c = cluster
    c.workers_ready()
    if not any(ref.name == "master-reservation" for ref in c.orch.list()):  # as in the test above
        running(c, c.orch.launch(WorkloadSpec(
            name="master-reservation", image=c.engine, command=["sleep", "3600"], node="h1",
            cpu_reservation=MASTER_RESERVATION, restart="always")).id)
    spark = start_standalone(c.lab.add_host("sm"), c.lab.add_host("sw"), wait_for)
    http = signed_in(c)

    # the cluster's Spark configuration, collected as the manager deployed it
    conf = c.lab.root / "spark-conf"
    conf.mkdir()
    hosts = hosts_file(c.lab)  # for the executors on the Spark worker host (an engine's
    # container has its own name and address in its /etc/hosts)
    (conf / "spark-defaults.conf").write_text(
        "spark.master %s\nspark.executor.memory 512m\nspark.executor.cores 1\n"
        "spark.cores.max 2\nspark.ui.showConsoleProgress false\n"
        "spark.executor.extraJavaOptions %s\n" % (spark.master_url, java_options(hosts)))
    collect([conf], bundles_dir(c.settings))

    repository, tag = c.engine.rsplit(":", 1)
    images = api_ok(http.get(c.url + "/api/v1/engine-images"), 200)
    if not any(i.get("is_default") for i in images):
        api_ok(http.post(c.url + "/api/v1/engine-images", json={
            "repository": repository, "tag": tag, "is_default": True}), 201)
    # room for a driver JVM next to the kernel; too big for the master's reserved node
    profile = api_ok(http.post(c.url + "/api/v1/engine-profiles", json={
        "name": "spark-driver", "cpu": ENGINE_CPU, "memory_gb": 2}), 201)["id"]
    project = api_ok(http.post(c.url + "/api/v1/projects", json={
        "name": "spark-" + os.urandom(2).hex(), "template": "pyspark"}), 201)["id"]

    # --- a session: pyspark from the cluster's parcel, executors on the Spark worker
    s = api_ok(http.post(c.url + "/api/v1/projects/%d/sessions" % project,
                         json={"profile_id": profile}), 201)
    url = c.url + "/api/v1/sessions/%d" % s["id"]
    s = wait_for(lambda: (lambda x: x if x["status"] != "starting" else None)(
        api_ok(http.get(url), 200)), 240, "the session to start")
    assert s["status"] == "running" and s["node"] in ("h2", "h3"), s
    node_address = {"h2": c.h2.address, "h3": c.h3.address}[s["node"]]
    r = http.post(url + "/execute", json={"code": SPARK_SESSION_CODE % "from-session"},
                  stream=True, timeout=300)
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.iter_lines() if line]
    lines = "".join(e.get("text", "") for e in events if e.get("name", "stdout") == "stdout"
                    ).split("\n")
    assert not [e for e in events if e["type"] == "error"], "".join(
        e.get("text", "") for e in events if e.get("name") == "stderr")[-4000:]
    home = str(parcels_dir() / "SPARK3" / "lib" / "spark3")
    total, module, commands, driver_host, app_id = [ln for ln in lines if ln.strip()][-5:]
    assert total == str(sum(range(100000))), events
    assert module.startswith(home + "/python/lib/pyspark.zip/"), module  # the cluster's pyspark
    assert commands.split() == [home + "/bin/spark-submit", home + "/bin/pyspark",
                                home + "/bin/spark-shell", java_home() + "/bin/java"], commands
    app = spark.apps().get("from-session")
    assert app is not None and app["id"] == app_id, describe(spark)
    assert driver_host == node_address  # executors connected back to the engine's node
    executors = spark.executors_of(app_id)
    assert executors, describe(spark)  # the Spark worker host ran them, not the engine
    worker = next(w for w in spark.master_json()["workers"] if w["host"] == spark.worker_address)
    assert worker["host"] not in (c.h1.address, c.h2.address, c.h3.address)
    # the running application's Spark UI, through the workbench (the engine origin, as the
    # session page's "Spark UI" link opens it)
    access = api_ok(http.post(url + "/engine-access", json={"path": "cdsw/spark-ui/"}), 200, 201)
    browser = requests.Session()
    page = browser.get(access["url"], timeout=60)
    assert page.status_code == 200, (page.status_code, page.text[:500])
    assert page.url.startswith(access["origin"] + "/api/v1/sessions/%d/engine/cdsw/spark-ui/"
                               % s["id"]), page.url
    assert "from-session" in page.text and "Spark Jobs" in page.text, page.text[:1500]
    execute_ok = http.post(url + "/execute", json={"code": "spark.stop()"}, timeout=120)
    assert execute_ok.status_code == 200, execute_ok.text
    gone = browser.get(access["origin"] + "/api/v1/sessions/%d/engine/cdsw/spark-ui/" % s["id"],
                       timeout=60)
    assert gone.status_code == 503 and "No Spark application" in gone.text, gone.text[:300]
    api_ok(http.post(url + "/stop"), 200)
    wait_for(lambda: api_ok(http.get(url), 200)["status"] == "stopped", 60, "the session to stop")

    # --- the pyspark template (pi.py: Python on the executors) as a job, and through
    # spark-submit; the driver's address in the application is the engine's node
    api_ok(http.put(c.url + "/api/v1/projects/%d/files/content" % project, json={
        "path": "submit.sh", "content": "spark-submit pi.py\n"}), 200)
    jobs = c.url + "/api/v1/projects/%d/jobs" % project
    for count, script in enumerate(("pi.py", "submit.sh"), 1):  # pi.py names itself cdsw-pi
        job = api_ok(http.post(jobs, json={"name": script, "script": script,
                                           "profile_id": profile}), 201)
        api_ok(http.post("%s/%d/runs" % (jobs, job["id"])), 201)

        def finished() -> Any:
            runs = api_ok(http.get("%s/%d/runs" % (jobs, job["id"])), 200)
            return runs[0] if runs and runs[0]["status"] not in ("queued", "running") else None
        run = wait_for(finished, 300, "job %s to finish" % script)
        log = http.get("%s/%d/runs/%d/log" % (jobs, job["id"], run["id"])).text
        assert run["status"] == "succeeded", (run, log[-3000:], describe(spark))
        assert "pi is roughly 3.1" in log, log[-3000:]
        assert run["node"] in ("h2", "h3"), run
        apps = [a for a in spark.master_json().get("completedapps", []) if a["name"] == "cdsw-pi"]
        assert len(apps) == count, describe(spark)
        latest = max(apps, key=lambda a: a.get("starttime", 0))
        assert spark.executors_of(latest["id"]), describe(spark)  # on the Spark worker host

    # --- Scala: a session of the Scala kernel (Spark's own REPL on the cluster's parcel) on a
    # worker; a job whose closure uses a value of an earlier cell (the REPL's classes, served
    # by the driver in the engine) runs its executors on the Spark worker host
    image = next(i for i in api_ok(http.get(c.url + "/api/v1/engine-images"), 200)
                 if (i["repository"], i["tag"]) == (repository, tag))
    if "scala" not in image["kernels"]:  # its engines get the cluster's Spark and Java
        api_ok(http.patch(c.url + "/api/v1/engine-images/%d" % image["id"],
                          json={"kernels": image["kernels"] + ["scala"]}), 200)
    s = api_ok(http.post(c.url + "/api/v1/projects/%d/sessions" % project,
                         json={"profile_id": profile, "kernel": "scala"}), 201)
    url = c.url + "/api/v1/sessions/%d" % s["id"]
    s = wait_for(lambda: (lambda x: x if x["status"] != "starting" else None)(
        api_ok(http.get(url), 200)), 240, "the Scala session to start")
    assert s["status"] == "running" and s["node"] in ("h2", "h3"), s
    node_address = {"h2": c.h2.address, "h3": c.h3.address}[s["node"]]

    def scala(code: str) -> str:
        r = http.post(url + "/execute", json={"code": code}, stream=True, timeout=600)
        assert r.status_code == 200, r.text
        events = [json.loads(line) for line in r.iter_lines() if line]
        assert events[-1].get("status") == "ok", (events, describe(spark))
        return "".join(e.get("text", "") for e in events if e.get("name") == "stdout")

    assert "val factor: Int = 3" in scala("val factor = 3")
    out = scala('val total = sc.parallelize(1 to 100000, 4).map(_.toLong * factor).sum().toLong\n'
                'println(s"total=$total app=${sc.applicationId} '
                'driver=${sc.getConf.get("spark.driver.host")}")')
    found = re.search(r"total=(\d+) app=(\S+) driver=(\S+)", out)
    assert found, out
    assert int(found.group(1)) == 3 * sum(range(100001)), out
    app_id = found.group(2)
    assert found.group(3) == node_address, out  # the driver: the engine on its node
    app = spark.apps().get("Scala session %d" % s["id"])
    assert app is not None and app["id"] == app_id, describe(spark)
    assert spark.executors_of(app_id), describe(spark)  # on the Spark worker host
    completion = api_ok(http.post(url + "/complete", json={"code": "sc.paralleli"}), 200)
    assert completion["matches"] == ["parallelize"], completion
    api_ok(http.post(url + "/stop"), 200)
    wait_for(lambda: api_ok(http.get(url), 200)["status"] == "stopped", 60, "the session to stop")
