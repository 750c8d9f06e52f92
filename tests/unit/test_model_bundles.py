"""Edge bundles without Docker: signing, verification (wrong key, forged signature, cut short,
changed manifest, any byte changed, bytes appended) and `cdsw models verify`'s one line; the
edge replica's two request shapes over a real model function (models/bundles.py,
engine/model_edge.py). The bundle's image part is a small tar standing in for `docker save`'s
output: verification treats those bytes like any others."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdsw_agent.cli.main import cli
from cdsw_agent.engine.model_edge import Edge, handler_for
from cdsw_agent.engine.model_server import Replica, ReplicaServer, load_function
from cdsw_agent.models import bundles, signing

from ..conftest import make_settings

MANIFEST: Dict[str, Any] = {"format": bundles.FORMAT, "model": {"id": 3, "name": "adder"},
                            "build": {"id": 7}, "image": {"ref": "cdsw-edge/model-3:b7",
                                                          "id": "sha256:" + "0" * 64},
                            "signed_by": "x"}


def fake_docker_save() -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (("index.json", b'{"manifests": []}'), ("manifest.json", b"[]"),
                           ("blobs/sha256/ab", bytes(range(256)) * 40)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


@pytest.fixture
def signed(tmp_path: Path) -> Tuple[Path, Any]:
    settings = make_settings(tmp_path / "data")
    key = signing.site_key(settings)
    path = tmp_path / "adder.cdsw-bundle"
    bundles.write_bundle(path, MANIFEST, fake_docker_save(), key)
    return path, key.public_key()


def refused(path: Path, key: Any) -> str:
    with pytest.raises(bundles.BundleError) as e:
        bundles.verify(path, key)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_a_signed_bundle_verifies_and_docker_save_members_stay_at_the_top(signed: Any) -> None:
    path, public = signed
    assert bundles.verify(path, public) == MANIFEST
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names == [bundles.MANIFEST, "index.json", "manifest.json", "blobs/sha256/ab",
                     bundles.SIGNATURE]


def test_the_site_key_is_made_once_private_and_its_public_half_loads(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    key = signing.site_key(settings)
    assert signing.key_path(settings).stat().st_mode & 0o777 == 0o600
    assert signing.fingerprint(signing.site_key(settings)) == signing.fingerprint(key)
    public = signing.load_public(signing.public_pem(key).encode(), "pem")
    assert signing.fingerprint(public) == signing.fingerprint(key)
    with pytest.raises(signing.SigningKeyError):
        signing.load_public(b"not a key", "junk.pem")


def test_wrong_key_is_refused(signed: Any) -> None:
    path, public = signed
    other = Ed25519PrivateKey.generate().public_key()
    message = refused(path, other)
    assert "signed by key %s, not by the trusted key %s" % (
        signing.fingerprint(public), signing.fingerprint(other)) in message


def test_a_signature_by_another_key_claiming_the_trusted_one_is_refused(signed: Any,
                                                                        tmp_path: Path) -> None:
    """The attacker re-signs a changed bundle with their key and writes the site's fingerprint
    into the statement."""
    path, public = signed
    attacker = Ed25519PrivateKey.generate()
    forged = tmp_path / "forged"
    with open(forged, "wb") as f:
        hashing = bundles._Hashing(f)  # type: ignore[arg-type]
        with tarfile.open(fileobj=hashing, mode="w", format=tarfile.PAX_FORMAT) as tar:
            evil = dict(MANIFEST, model={"id": 3, "name": "evil"})
            bundles._add(tar, bundles.MANIFEST, json.dumps(evil).encode())
            statement = json.dumps({"format": bundles.FORMAT, "sha256":
                                    hashing.sha256.hexdigest(),
                                    "signed_by": signing.fingerprint(public)}).encode()
            bundles._add(tar, bundles.SIGNATURE, json.dumps(
                {"statement": statement.decode(),
                 "signature": signing.sign(attacker, statement)}).encode())
    assert "signature that is not the trusted key's" in refused(forged, public)


@pytest.mark.parametrize("keep", [0.5, 0.99, 1024])
def test_a_truncated_bundle_is_refused(signed: Any, keep: float) -> None:
    path, public = signed
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)] if keep < 1 else data[:-int(keep)])
    assert "do not run it" in refused(path, public)


def test_a_changed_manifest_is_refused(signed: Any) -> None:
    path, public = signed
    data = path.read_bytes()
    at = data.index(b'"adder"')
    path.write_bytes(data[:at] + b'"evil!"' + data[at + 7:])  # same length, valid JSON
    message = refused(path, public)
    assert message.endswith("was changed after it was signed (its bytes do not match the "
                            "signature); do not run it"), message


def test_any_byte_changed_is_refused(signed: Any) -> None:
    path, public = signed
    data = path.read_bytes()
    for i in range(len(data)):  # every one of its 20 kB
        changed = bytearray(data)
        changed[i] ^= 0x01
        path.write_bytes(bytes(changed))
        refused(path, public)
    path.write_bytes(data + b"\0" * 512)  # appended bytes too
    refused(path, public)
    path.write_bytes(data)
    assert bundles.verify(path, public)["model"]["name"] == "adder"


def test_cli_verify_says_ok_or_refuses_in_one_line(signed: Any, tmp_path: Path) -> None:
    path, public = signed
    pem = tmp_path / "site.pem"
    pem.write_text(signing.public_pem(public))
    runner = CliRunner()
    ok = runner.invoke(cli, ["--conf", str(tmp_path / "none.conf"), "models", "verify",
                             str(path), "--key", str(pem)])
    assert ok.exit_code == 0, ok.output
    assert "model adder, build 7" in ok.output and ok.output.rstrip().endswith(": OK")
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = runner.invoke(cli, ["--conf", str(tmp_path / "none.conf"), "models", "verify",
                              str(path), "--key", str(pem)])
    assert bad.exit_code == 1
    lines = bad.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdsw: error: ") \
        and "do not run it" in lines[0], bad.output


# --- the edge replica

MODEL = "def predict(args):\n    return {'sum': args['a'] + args['b']}\n"


@pytest.fixture
def edge_url(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "model.py").write_text(MODEL)
    function, error = load_function(str(tmp_path / "model.py"), "predict")
    assert not error
    edge = Edge({"name": "adder", "build": 7, "example_input": {"a": 1, "b": 2}}, "edge-key",
                Replica(function, error, ""))
    server = ReplicaServer(("127.0.0.1", 0), handler_for(edge))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_edge_answers_both_request_shapes_with_its_access_key(edge_url: str) -> None:
    r = requests.post(edge_url + "/model", json={"accessKey": "edge-key",
                                                 "request": {"a": 2, "b": 3}})
    assert r.status_code == 200 and r.json() == {"success": True, "response": {"sum": 5}}
    r = requests.post(edge_url + "/model", json={"accessKey": "wrong", "request": {}})
    assert r.status_code == 401 and r.json()["success"] is False
    assert requests.post(edge_url + "/model", json={"request": {}}).status_code == 401
    v2 = {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [4]},
                     {"name": "b", "shape": [1], "datatype": "INT64", "data": [5]}]}
    auth = {"Authorization": "Bearer edge-key"}
    r = requests.post(edge_url + "/v2/models/adder/infer", json=v2, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"model_name": "adder", "model_version": "7", "outputs": [
        {"name": "sum", "datatype": "INT64", "shape": [1], "data": [9]}]}
    assert requests.post(edge_url + "/v2/models/adder/infer?accessKey=edge-key",
                         json=v2).status_code == 200
    assert requests.post(edge_url + "/v2/models/adder/infer", json=v2).status_code == 401
    assert requests.post(edge_url + "/v2/models/other/infer", json=v2,
                         headers=auth).status_code == 404
    assert requests.post(edge_url + "/v2/models/adder/infer", json={"x": 1},
                         headers=auth).status_code == 400
    assert requests.get(edge_url + "/v2/health/live").json() == {"live": True}
    assert requests.get(edge_url + "/v2/health/ready").json() == {"ready": True}
    meta = requests.get(edge_url + "/v2/models/adder", headers=auth).json()
    assert meta["name"] == "adder" and [i["name"] for i in meta["inputs"]] == ["a", "b"]
    assert requests.get(edge_url + "/v2/models/adder/ready", headers=auth).status_code == 200


# --- which build `cdsw models export` takes

def test_export_picks_a_good_image_build_and_says_why_not_otherwise(api: Any) -> None:
    from cdsw_agent.store.models_models import Model, ModelBuild

    client = api.client_for(api.user())
    projects = [client.post("/api/v1/projects", json={"name": n}).json()["id"]
                for n in ("edge one", "edge two")]
    with api.db.session() as s:
        models = [Model(project_id=p, name="twin", file="m.py", function="f") for p in projects]
        solo = Model(project_id=projects[0], name="solo", file="m.py", function="f")
        s.add_all(models + [solo])
        s.flush()
        s.add_all([
            ModelBuild(model_id=solo.id, status="succeeded", file="m.py", function="f",
                       artifact="cdsw/model:m%d-b1" % solo.id),
            ModelBuild(model_id=solo.id, status="failed", file="m.py", function="f"),
            ModelBuild(model_id=models[0].id, status="succeeded", file="m.py", function="f",
                       artifact="models/builds/9/files")])
        s.flush()
        solo_id, twin_id = solo.id, models[0].id
    with api.db.session() as s:
        model, build = bundles.find_build(s, "solo", None)
        assert (model.id, build.status) == (solo_id, "succeeded")
        assert bundles.find_build(s, str(solo_id), build.id)[1].id == build.id
        failed = build.id + 1
        for ref, number, message in [
                ("twin", None, "2 models are named twin"),
                ("nothing", None, "no model nothing"),
                ("solo", failed, "build %d of model solo failed" % failed),
                ("solo", 999, "model solo has no build 999"),
                (str(twin_id), None, "is a folder made by the local backend, not an image")]:
            with pytest.raises(bundles.BundleError, match=message):
                bundles.find_build(s, ref, number)


def test_the_model_page_links_image_builds_to_their_bundle(api: Any) -> None:
    from cdsw_agent.store.models_models import Model, ModelBuild

    owner = api.user()
    client = api.client_for(owner)
    project = client.post("/api/v1/projects", json={"name": "edge page"}).json()["id"]
    with api.db.session() as s:
        model = Model(project_id=project, name="paged", file="m.py", function="f")
        s.add(model)
        s.flush()
        s.add_all([ModelBuild(model_id=model.id, status="succeeded", file="m.py", function="f",
                              artifact="cdsw/model:m%d-b1" % model.id),
                   ModelBuild(model_id=model.id, status="succeeded", file="m.py", function="f",
                              artifact="models/builds/2/files")])
        s.flush()
        model_id = model.id
        image_build, folder_build = [b.id for b in s.query(ModelBuild).filter_by(
            model_id=model.id).order_by(ModelBuild.id)]
    html = client.get("/projects/%d/models/%d" % (project, model_id)).text
    link = "/api/v1/projects/%d/models/%d/builds/%%d/bundle" % (project, model_id)
    assert link % image_build in html and link % folder_build not in html
    viewer = api.user()
    r = client.put("/api/v1/projects/%d/collaborators/%d" % (project, viewer.id),
                   json={"role": "viewer"})
    assert r.status_code == 200, r.text
    seen = api.client_for(viewer).get("/projects/%d/models/%d" % (project, model_id))
    assert seen.status_code == 200 and link % image_build not in seen.text
