"""Experiments on the swarm backend with the real engine image, through the master's HTTP API.

One gateway host (a network namespace with its own dockerd from the CDSW_DOCKER role, see
netns.py) runs the real master (`cdsw role master start`), which makes the swarm. The engine
image is built on the shared test dockerd and loaded onto the host. A run's script imports the
`cdsw` library baked into the image, tracks metrics and a file inside its container, and the
API lists, compares and serves them; a run over its profile's memory ends as out of memory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import requests

from cdsw_agent.images import transfer
from cdsw_agent.orchestrators import get_orchestrator
from cdsw_agent.settings import load_settings

from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .netns import Lab, available, docker_env, start_docker_role, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

CDSW = str(Path(sys.executable).with_name("cdsw"))
PORT = 14643  # outside the engine ports (roles/engine_firewall.py), which engines cannot reach
ADMIN, PASSWORD = "admin-exp", "pw-" + os.urandom(6).hex()
FINAL = ("succeeded", "failed", "timed_out", "stopped", "lost")

TRAIN = """\
import os, sys
import cdsw
rate = float(sys.argv[1])
print("user", os.environ["HADOOP_USER_NAME"], "experiment", os.environ["CDSW_EXPERIMENT_ID"])
cdsw.track_metric("rate", rate)
cdsw.track_metric("score", rate * 2)
cdsw.track_metric("engine", "container" if os.path.exists("/.dockerenv") else "process")
with open("result.txt", "w") as f:
    f.write("rate=%s\\n" % rate)
cdsw.track_file("result.txt")
"""


@pytest.fixture(scope="module")
def master(engine_image: str, docker_engine: Any, tmp_path_factory: Any  # noqa: F811
           ) -> Iterator[Dict[str, Any]]:
    reason = available()
    if reason:
        pytest.skip(reason)
    saved = transfer.save_image(docker_engine.client, engine_image,
                                tmp_path_factory.mktemp("engine") / "engine.tar")
    with Lab(Path("/var/lib/cdsw-lab") / ("exp-" + os.urandom(3).hex())) as lab:
        h1 = lab.add_host("h1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
        (lab.root / "empty.conf").write_text("")
        (lab.root / "empty.properties").write_text("")
        env.update(docker_env(h1), CDSW_CONF=str(lab.root / "empty.conf"),
                   CDSW_PROPERTIES=str(lab.root / "empty.properties"),
                   CDSW_ORCHESTRATOR="swarm", CDSW_CLUSTER_SECRET="exp-" + os.urandom(8).hex(),
                   CDSW_HTTP_PORT=str(PORT), CDSW_STORAGE_BACKEND="local",
                   CDSW_ARGON2_TIME_COST="1", CDSW_ARGON2_MEMORY_KIB="1024",
                   CDSW_MASTER_HOST=h1.address, CDSW_BIND_ADDRESS=h1.address)
        _, client = start_docker_role(h1, CDSW)
        assert transfer.load_image(client, saved.path) == [engine_image]
        proc = h1.popen([CDSW, "role", "master", "start"], env=env, log_name="master.log")
        url = "http://%s:%d" % (h1.address, PORT)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError("master exited: %s" % h1.log("master.log")[-1500:])
            try:
                return requests.get(url + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, 120, "the master API")
        r = subprocess.run(h1.wrap([CDSW, "admin", "create-user", ADMIN, "--admin",
                                    "--password-stdin"]), input=PASSWORD + "\n", text=True,
                           capture_output=True, env=dict(os.environ, **env), timeout=60)
        assert r.returncode == 0, r.stderr
        http = requests.Session()
        r = http.post(url + "/api/v1/auth/signin", json={"username": ADMIN, "password": PASSWORD})
        assert r.status_code == 200, r.text
        http.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        try:
            yield dict(url=url, http=http, image=engine_image, host=h1,
                       settings=load_settings(environ=env))
        finally:
            orch = get_orchestrator(load_settings(environ=env))
            for ref in orch.list({"io.cdsw.kind": "experiment"}):
                orch.remove(ref.id)
            print("--- master.log (tail)\n%s" % h1.log("master.log")[-3000:])


def ok(r: requests.Response, *codes: int) -> Any:
    assert r.status_code in codes, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                        r.status_code, r.text[:800])
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r


def wait_final(http: requests.Session, url: str, timeout: float = 180) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = ok(http.get(url), 200)
        if run["status"] in FINAL and (run["files"] == [] or run["files"][0]["size"] is not None):
            return run
        assert time.monotonic() < deadline, "run stayed %s: %s" % (run["status"], run)
        time.sleep(0.5)


def test_experiments_track_metrics_inside_containers(master: Dict[str, Any]) -> None:
    url, http = master["url"], master["http"]
    repository, tag = master["image"].rsplit(":", 1)
    ok(http.post(url + "/api/v1/engine-images", json={"repository": repository, "tag": tag,
                                                      "is_default": True}), 201)
    project = ok(http.post(url + "/api/v1/projects", json={"name": "swarm experiments"}), 201)
    files = url + "/api/v1/projects/%d/files/content" % project["id"]
    ok(http.put(files, json={"path": "train.py", "content": TRAIN}), 200)
    ok(http.put(files, json={"path": "hog.py", "content":
                             "hog = bytearray(400 * 1024 * 1024)\nprint('survived')\n"}), 200)
    base = url + "/api/v1/projects/%d/experiments" % project["id"]

    first = ok(http.post(base, json={"script": "train.py", "arguments": "0.25"}), 201)
    second = ok(http.post(base, json={"script": "train.py", "arguments": "1.5",
                                      "comment": "faster"}), 201)
    a = wait_final(http, "%s/%d" % (base, first["id"]))
    b = wait_final(http, "%s/%d" % (base, second["id"]))
    log = ok(http.get("%s/%d/log" % (base, a["id"])), 200).text
    assert a["status"] == "succeeded", (a, log)
    assert log == "user %s experiment %d\n" % (ADMIN, a["id"])
    assert a["metrics"] == {"rate": 0.25, "score": 0.5, "engine": "container"}
    assert a["files"] == [{"path": "result.txt", "size": len("rate=0.25\n")}]
    r = http.get("%s/%d/download" % (base, a["id"]), params={"file": "result.txt"})
    assert r.status_code == 200 and r.content == b"rate=0.25\n"
    cmp = ok(http.get(base + "/compare", params={"ids": "%d,%d" % (a["id"], b["id"])}), 200)
    assert cmp["metrics"] == [{"metric": "engine", "values": ["container", "container"]},
                              {"metric": "rate", "values": [0.25, 1.5]},
                              {"metric": "score", "values": [0.5, 3.0]}]
    # the project folder never saw the runs' output
    listing = ok(http.get(url + "/api/v1/projects/%d/files" % project["id"]), 200)
    names = {e["name"] for e in (listing if isinstance(listing, list) else listing["entries"])}
    assert "result.txt" not in names

    # more memory than the profile allows: out of memory, not a hang
    small = ok(http.post(url + "/api/v1/engine-profiles", json={
        "name": "tiny-exp", "cpu": 0.5, "memory_gb": 0.125}), 201)
    oom = ok(http.post(base, json={"script": "hog.py", "profile_id": small["id"]}), 201)
    done = wait_final(http, "%s/%d" % (base, oom["id"]))
    assert (done["status"], done["reason"]) == ("failed", (
        "killed by SIGKILL (out of memory: the engine used more than its 128 MiB profile; "
        "choose a larger profile)")), done
    assert "survived" not in ok(http.get("%s/%d/log" % (base, oom["id"])), 200).text


TRACK_WITH_MLFLOW = """\
import os
import mlflow  # from the engine image; nothing about MLflow is configured by the script

with mlflow.start_run() as run:
    mlflow.log_param("alpha", "0.5")
    for step in range(3):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.set_tag("engine", "container" if os.path.exists("/.dockerenv") else "process")
print("mlflow", mlflow.__version__, "run", run.info.run_id, "into", os.environ["MLFLOW_EXPERIMENT_NAME"])
"""


def test_mlflow_client_tracks_from_inside_a_container(master: Dict[str, Any]) -> None:
    """The engine image's own `mlflow` client, in a container on the swarm, logs into the
    workbench's /mlflow with what the engine was given (tracking URI, token, experiment)."""
    url, http = master["url"], master["http"]
    repository, tag = master["image"].rsplit(":", 1)
    images = ok(http.get(url + "/api/v1/engine-images"), 200)
    if not any(i["repository"] == repository and i["tag"] == tag for i in images):
        ok(http.post(url + "/api/v1/engine-images", json={"repository": repository, "tag": tag,
                                                          "is_default": True}), 201)
    project = ok(http.post(url + "/api/v1/projects", json={"name": "mlflow in engines"}), 201)
    files = url + "/api/v1/projects/%d/files/content" % project["id"]
    ok(http.put(files, json={"path": "track.py", "content": TRACK_WITH_MLFLOW}), 200)
    base = url + "/api/v1/projects/%d/experiments" % project["id"]
    script_run = ok(http.post(base, json={"script": "track.py"}), 201)
    done = wait_final(http, "%s/%d" % (base, script_run["id"]))
    log = ok(http.get("%s/%d/log" % (base, script_run["id"])), 200).text
    print(log.strip())
    assert done["status"] == "succeeded", (done, log)
    said = re.search(r"^mlflow \S+ run (\d+) into (\S+)$", log, re.M)
    assert said and said.group(2) == "%s/%s" % (ADMIN, project["slug"]), log
    mlflow_id = int(said.group(1))
    tracked = ok(http.get("%s/%d" % (base, mlflow_id)), 200)
    assert tracked["tracker"] == "mlflow", tracked
    assert tracked["launched_by"] == ADMIN
    assert tracked["metric_steps"] == {"loss": [[0, 1.0], [1, 0.5], [2, 1.0 / 3]]}, tracked
    assert tracked["status"] == "succeeded"
    listed = {r["id"] for r in ok(http.get(base), 200)}
    assert {script_run["id"], mlflow_id} <= listed  # beside the script's own run
