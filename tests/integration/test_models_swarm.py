"""Models on the real swarm backend with the real engine image, driven through the master's API.

h1 is a network namespace with its own dockerd (the CDSW_DOCKER role), made a swarm manager;
the engine image (built once per run on the test dockerd) is copied onto it. The master runs in
this process (uvicorn on loopback, orchestrator=swarm on h1's dockerd) and reaches the replicas
on h1's address, where they publish their ports in host mode. The build is a real `docker build`
on h1's dockerd: a requirements-less project whose cdsw-build.sh writes a file the function
reads, so the answer proves the replica runs the built image, not the project folder.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import docker.errors
import pytest

from cdsw_agent.images import transfer
from cdsw_agent.roles import swarm as swarm_mgr
from cdsw_agent.settings import load_settings

from ..conftest import build_api
from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .netns import Lab, available, docker_env, start_docker_role
from .test_models_api import Models, start_models, stop_all, wait

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

CDSW = str(Path(sys.executable).with_name("cdsw"))

MODEL_PY = """
import os, socket

def predict(args):
    return {"sum": args["a"] + args["b"], "built": open("/home/cdsw/built.txt").read().strip(),
            "uid": os.getuid(), "host": socket.gethostname()}
"""
BUILD_SH = "echo building in $(pwd) as $(id -u)\necho made-by-cdsw-build > built.txt\n"


class SwarmModels:
    """A one-node swarm with the engine image, and a master on it (see the module doc)."""

    def __init__(self, lab: Lab, engine: str, saved: Any, tmp: Path):
        self.h1 = lab.add_host("h1")
        _, self.client = start_docker_role(self.h1, CDSW)
        assert transfer.load_image(self.client, saved.path) == [engine]
        env = dict(docker_env(self.h1), CDSW_MASTER_HOST=self.h1.address)
        swarm_mgr.ensure_manager(self.client, load_settings(environ=env))
        from ..conftest import make_settings

        self.settings = make_settings(tmp / "data", orchestrator="swarm",
                                      docker_host=env["CDSW_DOCKER_HOST"],
                                      master_host=self.h1.address)
        self.engine = engine

    def start(self) -> Models:
        api = build_api(self.settings)
        m = start_models(api)
        admin = api.key_client(api.user(admin=True))
        repo, _, tag = self.engine.rpartition(":")
        r = admin.post("/api/v1/engine-images", json={"repository": repo, "tag": tag,
                                                       "is_default": True})
        assert r.status_code == 201, r.text
        return m


@pytest.fixture(scope="module")
def swarm_models(engine_image: str, docker_engine: Any,  # noqa: F811
                 tmp_path_factory: Any) -> Iterator[SwarmModels]:
    reason = available()
    if reason:
        pytest.skip(reason)
    saved = transfer.save_image(docker_engine.client, engine_image,
                                tmp_path_factory.mktemp("engine") / "engine.tar")
    with Lab(Path("/var/lib/cdsw-lab") / ("models-" + os.urandom(3).hex())) as lab:
        sm = SwarmModels(lab, engine_image, saved, tmp_path_factory.mktemp("models-swarm"))
        try:
            yield sm
        finally:
            for s in sm.client.services.list(filters={"label": "io.cdsw.kind=model"}):
                s.remove()
            sm.client.close()


def test_build_deploy_two_replicas_and_call_on_swarm(swarm_models: SwarmModels) -> None:
    m = swarm_models.start()
    try:
        m.file("model.py", MODEL_PY)
        m.file("cdsw-build.sh", BUILD_SH)
        created = m.create(name="adder", file="model.py", function="predict")
        build = m.build(created["id"])
        assert build["artifact"] == "cdsw/model:m%d-b%d" % (created["id"], build["id"])
        log = m.ok(m.client.get("%s/%d/builds/%d/log" % (m.base, created["id"], build["id"])))
        assert "building in /home/cdsw as 8536" in log, log
        image = swarm_models.client.images.get(build["artifact"])
        # it inherits the engine label: workers fetch it like any engine image
        assert image.labels.get("com.cdsw.engine") == "true"
        assert image.labels.get("io.cdsw.model-build") == str(build["id"])

        m.deploy(created["id"], replicas=2)
        model = m.wait_deployment(created["id"], lambda d: d["status"] == "deployed",
                                  "2 replicas on swarm", timeout=180)
        replicas = model["deployment"]["replica_states"]
        assert len(replicas) == 2 and all(r["node"] == "h1" for r in replicas), replicas
        answers = [m.call(created["access_key"], {"a": i, "b": 1}) for i in range(10)]
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        bodies = [r.json()["response"] for r in answers]
        assert [b["sum"] for b in bodies] == [i + 1 for i in range(10)]
        assert {b["built"] for b in bodies} == {"made-by-cdsw-build"}
        assert {b["uid"] for b in bodies} == {8536}
        assert len({b["host"] for b in bodies}) == 2  # both containers answered
        assert m.call("cdswm_wrong", {"a": 1, "b": 1}).status_code == 401
        counts = m.get(created["id"])["deployment"]["replica_states"]
        assert sorted(c["requests"] for c in counts) == [5, 5], counts
        services = swarm_models.client.services.list(filters={"label": "io.cdsw.kind=model"})
        assert len(services) == 2
        spec = services[0].attrs["Spec"]
        assert spec["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
        assert not spec["TaskTemplate"]["ContainerSpec"].get("Mounts")  # files are in the image

        m.action(created["id"], "stop")
        wait(lambda: not swarm_models.client.services.list(
            filters={"label": "io.cdsw.kind=model"}), 60, "replica services to go")

        # deleting answers at once; the build's image goes once no stopping replica holds it
        started = time.monotonic()
        r = m.client.delete("%s/%d" % (m.base, created["id"]))
        assert r.status_code == 204, r.text
        assert time.monotonic() - started < 20

        def image_gone() -> bool:
            try:
                swarm_models.client.images.get(build["artifact"])
                return False
            except docker.errors.ImageNotFound:
                return True
        wait(image_gone, 180, "the deleted model's image to be removed")
    finally:
        stop_all(m)
