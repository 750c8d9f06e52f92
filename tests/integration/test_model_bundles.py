"""Edge bundles end to end: a model built on the workbench's swarm (test_models_swarm's h1 and
its master in this process) is exported with `cdsw models export`, then started by `cdsw models
run-bundle` on "edge", another network-namespace host with a plain dockerd and no workbench (no
master, no worker, no engine image, its own empty configuration), given only the bundle and the
site's public key. It answers CDSW's request shape and the v2 inference protocol from the
built image (the function reads a file cdsw-build.sh made); with --access-key it refuses
callers without the key; a bundle with one byte changed refuses to start in one line and
leaves nothing in the edge's Docker. The same file also works with a bare `docker load` and
`docker run -p 8080:8080 IMAGE` (which checks no signature), and the model page's API
serves the same bundle (GET .../builds/N/bundle).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import requests

from cdsw_agent.models import bundles, signing

from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .netns import Host, start_docker_role, wait_for
from .test_models_api import stop_all
from .test_models_swarm import BUILD_SH, SwarmModels, swarm_models  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

CDSW = str(Path(sys.executable).with_name("cdsw"))


def clean_env(root: Path, **extra: str) -> Dict[str, str]:
    """An environment with no CDSW_* from outside and no system configuration files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    (root / "empty.conf").write_text("")
    (root / "empty.properties").write_text("")
    env.update(CDSW_CONF=str(root / "empty.conf"), CDSW_PROPERTIES=str(root / "empty.properties"),
               **extra)
    return env


def edge_cli(edge: Host, env: Dict[str, str], *argv: str) -> Any:
    return edge.run([CDSW] + list(argv), env=env, timeout=600)


def test_export_a_model_and_run_it_on_a_host_without_workbench(
        swarm_models: SwarmModels, tmp_path: Path) -> None:  # noqa: F811
    m = swarm_models.start()
    try:
        m.file("model.py", "def predict(args):\n    return {'sum': args['a'] + args['b'], "
               "'built': open('/home/cdsw/built.txt').read().strip()}\n")
        m.file("cdsw-build.sh", BUILD_SH)
        created = m.create(name="adder", file="model.py", function="predict",
                           example_input={"a": 1, "b": 2})
        build = m.build(created["id"])

        # --- on the master: export with the CLI, print the site's public key
        settings = swarm_models.settings
        master_env = clean_env(tmp_path, CDSW_DATA_DIR=str(settings.data_dir),
                               CDSW_DB_URL=settings.database_url, CDSW_ORCHESTRATOR="swarm",
                               CDSW_DOCKER_HOST=settings.docker_host)
        bundle = tmp_path / "adder.cdsw-bundle"
        r = swarm_models.h1.run([CDSW, "models", "export", "adder", "--build", str(build["id"]),
                                 "-o", str(bundle)], env=master_env, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        print("export:", r.stderr.strip().splitlines()[-1])
        key = swarm_models.h1.run([CDSW, "models", "signing-key"], env=master_env)
        assert key.returncode == 0 and "BEGIN PUBLIC KEY" in key.stdout, key.stderr
        assert "PRIVATE" not in key.stdout
        print(key.stderr.strip())

        # the same from the model page's API: a bundle of the same build, same key
        public = signing.load_public(key.stdout.encode(), "signing-key")
        downloaded = tmp_path / "from-api.cdsw-bundle"
        url = "%s/%d/builds/%d/bundle" % (m.base, created["id"], build["id"])
        with m.client.stream("GET", url, timeout=900) as r:
            assert r.status_code == 200, r.read()[:500]
            assert r.headers["content-disposition"].endswith(
                'filename="model-%d-build-%d.cdsw-bundle"' % (created["id"], build["id"]))
            with open(downloaded, "wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        via_api = bundles.verify(downloaded, public)
        assert (via_api["model"]["name"], via_api["build"]["id"]) == ("adder", build["id"])
        assert via_api["image"]["id"] == bundles.verify(bundle, public)["image"]["id"]
        downloaded.unlink()
        assert m.client.get("%s/%d/builds/%d/bundle" % (m.base, created["id"], 10**6)
                            ).status_code == 404

        # --- the edge host: a plain dockerd, nothing of the workbench, only two files
        edge = swarm_models.h1.lab.add_host("edge")
        _, client = start_docker_role(edge, CDSW)
        assert client.images.list() == []
        edge_dir = edge.root / "inbox"
        edge_dir.mkdir()
        shutil.copy(bundle, edge_dir / "adder.cdsw-bundle")
        (edge_dir / "site.pem").write_text(key.stdout)
        edge_env = clean_env(edge.root, CDSW_DATA_DIR=str(edge.root / "no-workbench"))
        sock = "unix://%s/run/docker.sock" % edge.root

        ok = edge_cli(edge, edge_env, "models", "verify", str(edge_dir / "adder.cdsw-bundle"),
                      "--key", str(edge_dir / "site.pem"))
        assert ok.returncode == 0 and ok.stdout.strip().endswith(": OK"), ok.stdout + ok.stderr
        print("verify:", ok.stdout.strip())

        # one byte changed, deep inside an image layer: refused in one line, nothing loaded
        tampered = edge_dir / "tampered.cdsw-bundle"
        data = bytearray((edge_dir / "adder.cdsw-bundle").read_bytes())
        data[len(data) // 2] ^= 0x01
        tampered.write_bytes(bytes(data))
        del data
        bad = edge_cli(edge, edge_env, "models", "run-bundle", str(tampered), "--key",
                       str(edge_dir / "site.pem"), "--docker-host", sock, "--port", "8080")
        print("tampered run-bundle (exit %d): %s" % (bad.returncode, bad.stderr.strip()))
        assert bad.returncode == 1
        assert bad.stderr.strip().splitlines() == [
            "cdsw: error: %s was changed after it was signed (its bytes do not match the "
            "signature); do not run it" % tampered]
        assert client.images.list() == [] and client.containers.list(all=True) == []

        # the real bundle, open (no access key)
        run = edge_cli(edge, edge_env, "models", "run-bundle",
                       str(edge_dir / "adder.cdsw-bundle"), "--key",
                       str(edge_dir / "site.pem"), "--docker-host", sock, "--port", "8080",
                       "--name", "adder-open")
        assert run.returncode == 0, run.stderr[-2000:]
        print("run-bundle:", run.stdout.strip())
        url = "http://%s:8080" % edge.address
        wait_for(lambda: requests.get(url + "/v2/health/ready", timeout=2).json()["ready"], 90,
                 "the bundle's model at %s (log: %s)" % (url, _logs(client, "adder-open")))
        r1 = requests.post(url + "/model", json={"request": {"a": 2, "b": 3}}, timeout=10)
        assert r1.status_code == 200, r1.text
        assert r1.json() == {"success": True, "response": {"sum": 5,
                                                           "built": "made-by-cdsw-build"}}
        v2 = {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [40]},
                         {"name": "b", "shape": [1], "datatype": "INT64", "data": [2]}]}
        r2 = requests.post(url + "/v2/models/adder/infer", json=v2, timeout=10)
        assert r2.status_code == 200, r2.text
        outputs = {o["name"]: o for o in r2.json()["outputs"]}
        assert outputs["sum"] == {"name": "sum", "datatype": "INT64", "shape": [1], "data": [42]}
        assert outputs["built"]["data"] == ["made-by-cdsw-build"]
        meta = requests.get(url + "/v2/models/adder", timeout=10).json()
        assert meta["versions"] == [str(build["id"])], meta
        assert [i["name"] for i in meta["inputs"]] == ["a", "b"]
        print("edge answers: /model %s, v2 %s" % (r1.json(), r2.json()["outputs"]))

        # the same bundle again, with an access key given at run time
        keyed = edge_cli(edge, edge_env, "models", "run-bundle",
                         str(edge_dir / "adder.cdsw-bundle"), "--key",
                         str(edge_dir / "site.pem"), "--docker-host", sock, "--port", "8081",
                         "--name", "adder-keyed", "--access-key", "edge-secret")
        assert keyed.returncode == 0, keyed.stderr[-2000:]
        url2 = "http://%s:8081" % edge.address
        wait_for(lambda: requests.get(url2 + "/v2/health/ready", timeout=2).ok, 90,
                 "the keyed model")
        assert requests.post(url2 + "/model", json={"request": {"a": 1, "b": 1}},
                             timeout=10).status_code == 401
        assert requests.post(url2 + "/model", json={"accessKey": "edge-secret", "request": {
            "a": 1, "b": 1}}, timeout=10).json()["response"]["sum"] == 2
        assert requests.post(url2 + "/v2/models/adder/infer", json=v2,
                             timeout=10).status_code == 401
        assert requests.post(url2 + "/v2/models/adder/infer", json=v2, timeout=10, headers={
            "Authorization": "Bearer edge-secret"}).status_code == 200

        # the bundle is also a plain `docker load` archive: docker run -p 8080:8080 IMAGE
        ref = "cdsw-edge/model-%d:b%d" % (created["id"], build["id"])
        loaded = edge.run(["docker", "-H", sock, "load", "-i",
                           str(edge_dir / "adder.cdsw-bundle")], timeout=600)
        assert loaded.returncode == 0 and ref in loaded.stdout, loaded.stdout + loaded.stderr
        plain = edge.run(["docker", "-H", sock, "run", "-d", "--name", "adder-plain", "-p",
                          "8082:8080", ref])
        assert plain.returncode == 0, plain.stderr
        url3 = "http://%s:8082" % edge.address
        wait_for(lambda: requests.get(url3 + "/v2/health/ready", timeout=2).ok, 90,
                 "the plainly run model")
        assert requests.post(url3 + "/model", json={"request": {"a": 20, "b": 1}},
                             timeout=10).json()["response"]["sum"] == 21
    finally:
        stop_all(m)


def _logs(client: Any, name: str) -> str:
    try:
        return client.containers.get(name).logs(tail=20).decode(errors="replace")
    except Exception as e:
        return "no logs: %s" % e
