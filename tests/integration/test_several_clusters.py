"""One workbench, two Hadoop clusters (issue 16), on network-namespace hosts set up as
test_three_hosts.py does (its fixtures' approach, copied; that test is untouched).

h1 runs CDSW_DOCKER and CDSW_MASTER; d1 is a gateway of cluster DEV and p1 one of cluster PROD,
each running CDSW_DOCKER and CDSW_WORKER with its workbench_cluster setting, so the master labels
their swarm nodes cdsw.cluster=DEV / PROD. Each cluster has its own client-configuration marker
(core-site.xml naming its NameNode) and realm file (krb5.conf).

The journey: a session and a job of a DEV project run only on d1 and see DEV's configuration;
bob (no PROD grant) cannot approve or run on PROD; alice's promotion to PROD, approved by carol,
runs the job on p1 with PROD's configuration and redeploys the PROD model with no failed call
while it is called; the rollback restores the previous snapshot.

As in test_three_hosts.py, all namespaces share one file system: workers bind-mount project
folders and bundles straight from the master's data directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests

from cdsw_agent.images import transfer
from cdsw_agent.orchestrators import get_orchestrator
from cdsw_agent.settings import load_settings

from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .netns import Lab, available, docker_env, start_docker_role, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

CDSW = str(Path(sys.executable).with_name("cdsw"))
SECRET = "two-clusters-" + os.urandom(8).hex()
PORT = 18544
PASSWORD = "pw-" + os.urandom(6).hex()
REALMS = {"DEV": "DEV.EXAMPLE.COM", "PROD": "PROD.EXAMPLE.COM"}
NAMENODES = {"DEV": "nn-dev-" + os.urandom(2).hex(), "PROD": "nn-prod-" + os.urandom(2).hex()}
WORKERS = {"d1": "DEV", "p1": "PROD"}


def base_env(lab_root: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    (lab_root / "empty.conf").write_text("")
    (lab_root / "empty.properties").write_text("")
    env.update(CDSW_CONF=str(lab_root / "empty.conf"),
               CDSW_PROPERTIES=str(lab_root / "empty.properties"),
               CDSW_ORCHESTRATOR="swarm", CDSW_CLUSTER_SECRET=SECRET,
               CDSW_HTTP_PORT=str(PORT), CDSW_STORAGE_BACKEND="local",
               CDSW_ARGON2_TIME_COST="1", CDSW_ARGON2_MEMORY_KIB="1024",
               CDSW_WORKER_HEARTBEAT_SECONDS="2", CDSW_CLUSTER_CLIENT_KIND="none")
    return env


class Workbench:
    def __init__(self, lab: Lab, engine: str):
        self.lab, self.engine = lab, engine
        self.h1 = lab.add_host("h1")
        self.gateways = {name: lab.add_host(name) for name in WORKERS}
        common = base_env(lab.root)
        self.master_env = dict(common, **docker_env(self.h1), CDSW_MASTER_HOST=self.h1.address,
                               CDSW_BIND_ADDRESS=self.h1.address)
        self.worker_env = {name: dict(common, **docker_env(h), CDSW_MASTER_HOST=self.h1.address,
                                      CDSW_WORKBENCH_CLUSTER=WORKERS[name])
                           for name, h in self.gateways.items()}
        self.settings = load_settings(environ=self.master_env)
        self.docker: Dict[str, Any] = {}
        self.workers: Dict[str, Any] = {}
        self.master: Any = None
        self.url = "http://%s:%d" % (self.h1.address, PORT)

    @property
    def orch(self) -> Any:  # h1's dockerd, once started
        if not hasattr(self, "_orch"):
            self._orch = get_orchestrator(self.settings)
        return self._orch

    def start_master(self) -> None:
        self.master = self.h1.popen([CDSW, "role", "master", "start"], env=self.master_env,
                                    log_name="master.log")

        def up() -> bool:
            if self.master.poll() is not None:
                raise AssertionError("master exited: %s" % self.h1.log("master.log")[-1500:])
            return requests.get(self.url + "/healthz", timeout=2).status_code == 200
        wait_for(up, 90, "the master API")

    def cli(self, *argv: str, stdin: str = "") -> subprocess.CompletedProcess:
        r = subprocess.run(self.h1.wrap([CDSW] + list(argv)), input=stdin, text=True,
                           capture_output=True, env=dict(os.environ, **self.master_env),
                           timeout=120)
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
        return r

    def signed_in(self, username: str) -> requests.Session:
        http = requests.Session()
        r = http.post(self.url + "/api/v1/auth/signin",
                      json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        http.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return http


@pytest.fixture(scope="module")
def workbench(engine_image: str, docker_engine: Any, tmp_path_factory: Any  # noqa: F811
              ) -> Iterator[Workbench]:
    reason = available()
    if reason:
        pytest.skip(reason)
    saved = transfer.save_image(docker_engine.client, engine_image,
                                tmp_path_factory.mktemp("engine") / "engine.tar")
    with Lab(Path("/var/lib/cdsw-lab") / ("2c-" + os.urandom(3).hex())) as lab:
        w = Workbench(lab, engine_image)
        try:
            for host in [w.h1, *w.gateways.values()]:
                w.docker[host.name] = start_docker_role(host, CDSW)
            assert transfer.load_image(w.docker["h1"][1], saved.path) == [engine_image]
            w.start_master()
            yield w
        finally:
            try:
                for ref in w.orch.list() if "h1" in w.docker else []:
                    w.orch.remove(ref.id)
            except Exception:
                pass
            print("--- h1 master.log (tail)\n%s" % w.h1.log("master.log")[-3000:])
            for name, host in w.gateways.items():
                print("--- %s worker.log (tail)\n%s" % (name, host.log("worker.log")[-2000:]))


def ok(r: requests.Response, *codes: int) -> Any:
    assert r.status_code in (codes or (200,)), "%s %s -> %d %s" % (
        r.request.method, r.request.url, r.status_code, r.text[:800])
    return r.json() if r.content else None


def finished_run(http: requests.Session, jobs: str, job_id: int, after: int = 0) -> Any:
    def done() -> Any:
        runs = [r for r in ok(http.get("%s/%d/runs" % (jobs, job_id))) if r["id"] > after]
        return runs[0] if runs and runs[0]["status"] not in ("queued", "running") else None
    return wait_for(done, 240, "job %d to finish" % job_id)


def test_dev_and_prod_behind_one_workbench(workbench: Workbench) -> None:
    w = workbench
    lab = w.lab.root
    # --- the admin registers the clusters, their configuration and who may run on PROD
    for name, admin in (("root2c", True), ("alice", False), ("bob", False), ("carol", False)):
        w.cli("admin", "create-user", name, *(["--admin"] if admin else []), "--password-stdin",
              stdin=PASSWORD + "\n")
    for cluster in ("DEV", "PROD"):
        (lab / ("krb5-%s.conf" % cluster)).write_text(
            "[libdefaults]\n default_realm = %s\n" % REALMS[cluster])
        conf = lab / ("conf-%s" % cluster)
        conf.mkdir()
        (conf / "core-site.xml").write_text(
            "<configuration><property><name>fs.defaultFS</name><value>hdfs://%s:8020</value>"
            "</property></configuration>\n" % NAMENODES[cluster])
    w.cli("clusters", "add", "DEV", "--open", "--krb5-conf", str(lab / "krb5-DEV.conf"))
    w.cli("clusters", "add", "PROD", "--kind", "prod", "--krb5-conf", str(lab / "krb5-PROD.conf"))
    w.cli("clusters", "grant", "PROD", "--user", "carol")
    for cluster in ("DEV", "PROD"):
        w.cli("client-config", "collect", "--cluster", cluster, "--source",
              str(lab / ("conf-%s" % cluster)))

    # --- each gateway's worker joins and its node is labelled with its cluster
    for name, host in w.gateways.items():
        w.workers[name] = host.popen([CDSW, "role", "worker", "start"],
                                     env=w.worker_env[name], log_name="worker.log")

    def labelled() -> bool:
        nodes = {n.name: n for n in w.orch.nodes()}
        return all(n in nodes and nodes[n].state == "ready"
                   and nodes[n].labels.get("cdsw.cluster") == c for n, c in WORKERS.items())
    wait_for(labelled, 180, "d1 and p1 to join with their cluster labels (logs: %s / %s)" % (
        w.gateways["d1"].log("worker.log")[-300:], w.gateways["p1"].log("worker.log")[-300:]))
    for name, host in w.gateways.items():
        wait_for(lambda: w.docker[name][1].images.list(name=w.engine.split(":")[0]), 300,
                 "the engine image on %s" % name)

    root, alice, bob, carol = (w.signed_in(u) for u in ("root2c", "alice", "bob", "carol"))
    repository, tag = w.engine.rsplit(":", 1)
    ok(root.post(w.url + "/api/v1/engine-images", json={
        "repository": repository, "tag": tag, "is_default": True}), 201)
    users = {u["username"]: u["id"] for u in ok(root.get(w.url + "/api/v1/users"))}

    # --- a DEV project: its session and job run on d1 with DEV's configuration
    src = ok(alice.post(w.url + "/api/v1/projects", json={"name": "churn"}), 201)["id"]
    ok(alice.put(w.url + "/api/v1/projects/%d/cluster" % src, json={"cluster": "DEV"}))
    files = w.url + "/api/v1/projects/%d/files/content" % src
    ok(alice.put(files, json={"path": "job.sh", "content":
                              "cat \"$HADOOP_CONF_DIR/core-site.xml\"; cat /etc/krb5.conf\n"}))
    ok(alice.put(files, json={"path": "model.py", "content":
                              "def predict(args):\n    return {'version': 1, 'x': args['x']}\n"}))
    ok(alice.put(w.url + "/api/v1/projects/%d/collaborators/%d" % (src, users["bob"]),
                 json={"role": "contributor"}))
    src_jobs = w.url + "/api/v1/projects/%d/jobs" % src
    job = ok(alice.post(src_jobs, json={"name": "nightly", "script": "job.sh",
                                        "schedule": "0 3 * * *"}), 201)
    ok(alice.post(w.url + "/api/v1/projects/%d/models" % src,
                  json={"name": "scorer", "file": "model.py", "function": "predict"}), 201)
    ok(alice.post("%s/%d/runs" % (src_jobs, job["id"])), 201)
    run = finished_run(alice, src_jobs, job["id"])
    log = alice.get("%s/%d/runs/%d/log" % (src_jobs, job["id"], run["id"])).text
    assert run["status"] == "succeeded" and run["node"] == "d1", (run, log[-1500:])
    assert NAMENODES["DEV"] in log and REALMS["DEV"] in log, log
    assert NAMENODES["PROD"] not in log and REALMS["PROD"] not in log, log

    s = ok(alice.post(w.url + "/api/v1/projects/%d/sessions" % src, json={}), 201)
    surl = w.url + "/api/v1/sessions/%d" % s["id"]
    s = wait_for(lambda: (lambda x: x if x["status"] != "starting" else None)(
        ok(alice.get(surl))), 240, "the DEV session to start")
    assert s["status"] == "running" and s["node"] == "d1", s
    r = alice.post(surl + "/execute", stream=True, json={"code": (
        "import os\nprint(open(os.environ['HADOOP_CONF_DIR'] + '/core-site.xml').read())\n"
        "print(open('/etc/krb5.conf').read())\n")})
    text = "".join(json.loads(line).get("text", "") for line in r.iter_lines() if line)
    assert NAMENODES["DEV"] in text and REALMS["DEV"] in text, text
    ok(alice.post(surl + "/stop"))

    # --- the PROD project: carol's; alice and bob are its Contributors, with no PROD grant
    dst = ok(carol.post(w.url + "/api/v1/projects", json={"name": "churn-prod"}), 201)["id"]
    ok(carol.put(w.url + "/api/v1/projects/%d/cluster" % dst, json={"cluster": "PROD"}))
    for who in ("alice", "bob"):
        ok(carol.put(w.url + "/api/v1/projects/%d/collaborators/%d" % (dst, users[who]),
                     json={"role": "contributor"}))
    promotions = w.url + "/api/v1/projects/%d/promotions" % dst
    first = ok(bob.post(w.url + "/api/v1/projects/%d/promotions" % src,
                        json={"target_project_id": dst}), 201)
    for who in (bob, alice):  # the requester, and a Contributor without the grant
        assert who.post("%s/%d/approve" % (promotions, first["id"]), json={}).status_code == 403
    assert bob.post(w.url + "/api/v1/projects/%d/sessions" % dst, json={}).status_code == 403

    # --- carol approves: the job runs on p1 with PROD's configuration, acting as carol
    done = ok(carol.post("%s/%d/approve" % (promotions, first["id"]), json={}))
    assert done["status"] == "approved", done
    dst_jobs = w.url + "/api/v1/projects/%d/jobs" % dst
    [prod_job] = ok(carol.get(dst_jobs))
    assert prod_job["name"] == "nightly"
    assert bob.post("%s/%d/runs" % (dst_jobs, prod_job["id"])).status_code == 403
    ok(carol.post("%s/%d/runs" % (dst_jobs, prod_job["id"])), 201)
    run = finished_run(carol, dst_jobs, prod_job["id"])
    log = carol.get("%s/%d/runs/%d/log" % (dst_jobs, prod_job["id"], run["id"])).text
    assert run["status"] == "succeeded" and run["node"] == "p1", (run, log[-1500:])
    assert NAMENODES["PROD"] in log and REALMS["PROD"] in log, log
    assert NAMENODES["DEV"] not in log and REALMS["DEV"] not in log, log

    # --- the promoted model, deployed on PROD with two replicas on p1
    [model] = ok(carol.get(w.url + "/api/v1/projects/%d/models" % dst))
    one = w.url + "/api/v1/projects/%d/models/%d" % (dst, model["id"])
    build = ok(carol.post(one + "/builds"), 201)
    build = wait_for(lambda: (lambda b: b if b["status"] not in ("queued", "building") else None)(
        ok(carol.get("%s/builds/%d" % (one, build["id"])))), 300, "the PROD model build")
    assert build["status"] == "succeeded", carol.get("%s/builds/%d/log" % (one, build["id"])).text
    ok(carol.post(one + "/deployment", json={"replicas": 2}), 201)
    wait_for(lambda: len([r for r in ok(carol.get(one + "/replicas")) if r["state"] == "ready"])
             == 2, 300, "two ready PROD replicas")
    assert {r["node"] for r in ok(carol.get(one + "/replicas")) if r["state"] == "ready"} == {"p1"}
    key = ok(carol.post(one + "/access-keys", json={}), 201)["access_key"]

    # --- a second promotion changes the model: rebuilt and rolled with no failed call
    calls: List[Any] = []
    stop = threading.Event()

    def call() -> None:
        x = 0
        while not stop.is_set():
            x += 1
            try:
                r = requests.post(w.url + "/model", json={"accessKey": key, "request": {"x": x}},
                                  timeout=30)
                calls.append((r.status_code, r.json()))
            except (requests.RequestException, ValueError) as e:
                calls.append((0, str(e)))
            stop.wait(0.05)
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        ok(alice.put(files, json={"path": "model.py", "content":
                                  "def predict(args):\n    return {'version': 2, 'x': args['x']}\n"}))
        second = ok(alice.post(w.url + "/api/v1/projects/%d/promotions" % src,
                               json={"target_project_id": dst}), 201)
        assert second["diff"]["files"]["changed"] == ["model.py"], second["diff"]
        done = ok(carol.post("%s/%d/approve" % (promotions, second["id"]), json={}))
        assert done["result"]["models_redeployed"] == ["scorer"], done

        def rolled() -> bool:
            live = [r for r in ok(carol.get(one + "/replicas")) if r["state"] == "ready"]
            return len(live) == 2 and all(r["build_id"] != build["id"] for r in live) \
                and bool(calls) and calls[-1][0] == 200 \
                and calls[-1][1]["response"]["version"] == 2
        wait_for(rolled, 600, "the PROD model to roll onto the promoted build")
    finally:
        stop.set()
        caller.join(60)
    failed = [c for c in calls if c[0] != 200 or not c[1].get("success")]
    assert calls and not failed, failed[:5]
    versions = [c[1]["response"]["version"] for c in calls]
    assert versions[0] == 1 and versions[-1] == 2, versions
    assert {r["node"] for r in ok(carol.get(one + "/replicas")) if r["state"] == "ready"} == {"p1"}

    # --- the rollback restores the previous snapshot (the first promotion's files); the model
    # is stopped first, so no third build outlives the test (approval's rebuild is shown above)
    ok(carol.post(one + "/deployment/stop"))
    back = ok(carol.post("%s/%d/rollback" % (promotions, second["id"]), json={}))
    assert back["status"] == "rolled_back", back
    assert back["result"]["rollback"]["models_redeployed"] == [], back["result"]
    prod_model = Path(w.settings.projects_dir) / str(dst) / "model.py"
    assert "'version': 1" in prod_model.read_text()
    history = ok(carol.get(promotions))
    assert [(h["id"], h["status"]) for h in history] == [(second["id"], "rolled_back"),
                                                        (first["id"], "approved")]
    assert SECRET not in w.h1.log("master.log") + "".join(
        h.log("worker.log") for h in w.gateways.values())
