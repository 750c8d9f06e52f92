"""Engine images from the master to the workers without a registry: the cluster routes
(POST /api/v1/cluster/images and /images/export) and the worker's sync_images, on the test
dockerd with a tiny busybox image that carries the engine label."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cdsw_agent.images import transfer
from cdsw_agent.roles import worker
from cdsw_agent.server import errors
from cdsw_agent.server.routes import cluster
from cdsw_agent.server.state import ServerState

from ..conftest import make_settings
from .docker_fixtures import docker_engine  # noqa: F401
from .netns import busybox_rootfs

pytestmark = pytest.mark.docker

SECRET = "image-secret-" + os.urandom(4).hex()


@pytest.fixture
def tiny(docker_engine: Any, tmp_path: Path) -> Iterator[Dict[str, Any]]:  # noqa: F811
    """A busybox image labelled as an engine image, removed afterwards."""
    ref = "cdsw-test/tiny-engine:%s" % os.urandom(3).hex()
    repository, tag = ref.split(":")
    tarball = busybox_rootfs(tmp_path / "busybox.tar")
    client = docker_engine.client
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag,
                                      changes=["LABEL com.cdsw.engine=true"])
    settings = make_settings(tmp_path / "data", cluster_secret=SECRET,
                             docker_host=docker_engine.url)
    app = FastAPI()
    app.state.server = ServerState.create(settings)
    app.state.server.db.upgrade()  # which host runs which cluster's models
    errors.install(app)
    app.include_router(cluster.router, prefix="/api/v1")
    try:
        with TestClient(app) as http:
            yield dict(client=client, ref=ref, id=client.images.get(ref).id, http=http,
                       settings=settings)
    finally:
        for image in client.images.list(name=repository):
            client.images.remove(image.id, force=True)


def post(t: Dict[str, Any], path: str, **body: Any) -> Any:
    return t["http"].post("/api/v1/cluster" + path, json=dict(body, hostname="w1"))


def test_wrong_secret_is_refused(tiny: Dict[str, Any]) -> None:
    for path, extra in (("/images", {}), ("/images/export", {"image": tiny["ref"]})):
        r = post(tiny, path, secret="wrong", **extra)
        assert r.status_code == 403 and r.json()["error"] == "wrong cluster secret"
        assert SECRET not in r.text


def test_list_and_export_round_trip(tiny: Dict[str, Any], tmp_path: Path) -> None:
    r = post(tiny, "/images", secret=SECRET)
    assert r.status_code == 200
    listed = {i["ref"]: i["id"] for i in r.json()["images"]}
    assert listed[tiny["ref"]] == tiny["id"]
    # only engine images leave the master
    r = post(tiny, "/images/export", secret=SECRET, image="no/such:image")
    assert r.status_code == 404
    r = post(tiny, "/images/export", secret=SECRET, image=tiny["ref"])
    assert r.status_code == 200
    digest = r.headers["X-Cdsw-Image-Sha256"]
    assert hashlib.sha256(r.content).hexdigest() == digest
    assert r.headers["X-Cdsw-Image-Id"] == tiny["id"]
    # the archive loads back into an image of the same id, under the same name
    tiny["client"].images.remove(tiny["ref"], force=True)
    archive = tmp_path / "copy.tar"
    archive.write_bytes(r.content)
    assert transfer.load_image(tiny["client"], archive, sha256=digest) == [tiny["ref"]]
    assert tiny["client"].images.get(tiny["ref"]).id == tiny["id"]
    # a second export is served from the same archive: same bytes, same checksum
    again = post(tiny, "/images/export", secret=SECRET, image=tiny["ref"])
    assert again.headers["X-Cdsw-Image-Sha256"] == digest


def test_a_models_build_goes_only_to_its_clusters_hosts(tiny: Dict[str, Any]) -> None:
    """Several clusters: a DEV model's image is listed to and exported for DEV's host only; a
    host of the default cluster (or one that has not reported its cluster yet) gets the engine
    images alone. Its pruning (below) then removes a build it holds from another cluster."""
    from cdsw_agent import clusters
    from cdsw_agent.models.builds import IMAGE_REPOSITORY
    from cdsw_agent.store.models import Project, User
    from cdsw_agent.store.models_models import Model

    db = tiny["http"].app.state.server.db
    with db.session() as s:
        dev = clusters.register(s, "DEV")
        user = User(username="ann", password_hash="-", email="ann@example.com", full_name="Ann")
        s.add(user)
        s.flush()
        project = Project(name="p", slug="p", owner_user_id=user.id, namespace="u:%d" % user.id,
                          visibility="private", cluster_id=dev.id)
        s.add(project)
        s.flush()
        model = Model(project_id=project.id, name="scorer", file="m.py", function="f")
        s.add(model)
        s.flush()
        model_ref = "%s:m%d-b%d" % (IMAGE_REPOSITORY, model.id,  # no other test's build
                                    900000 + int.from_bytes(os.urandom(2), "big"))
        cluster._report(s, "dev-host", cluster="DEV")
        cluster._report(s, "default-host", cluster="")
    tiny["client"].images.get(tiny["ref"]).tag(*model_ref.split(":"))
    try:
        def listed(host: str) -> set:
            r = tiny["http"].post("/api/v1/cluster/images", json=dict(secret=SECRET,
                                                                      hostname=host))
            assert r.status_code == 200, r.text
            return {i["ref"] for i in r.json()["images"]}

        assert {tiny["ref"], model_ref} <= listed("dev-host")
        for host in ("default-host", "not-reported-yet"):
            assert tiny["ref"] in listed(host) and model_ref not in listed(host)

        def export(host: str) -> int:
            return tiny["http"].post("/api/v1/cluster/images/export", json=dict(
                secret=SECRET, hostname=host, image=model_ref)).status_code

        assert (export("default-host"), export("dev-host")) == (404, 200)
    finally:
        tiny["client"].images.remove(model_ref)


class RecordedMaster(worker.MasterClient):
    """The worker's client, answering with what the real routes answered before the image was
    removed from the (shared) test dockerd, which here plays both master and worker."""

    def __init__(self, t: Dict[str, Any], corrupt: bool = False):
        super().__init__(t["settings"])
        self.listing = post(t, "/images", secret=SECRET).json()
        export = post(t, "/images/export", secret=SECRET, image=t["ref"])
        assert export.status_code == 200, export.text
        self.archive, self.headers = export.content, export.headers
        self.corrupt, self.downloads = corrupt, 0

    def post(self, path: str, **fields: Any) -> Dict[str, Any]:
        assert path == "/images"
        return self.listing

    def download(self, path: str, dest: str, **fields: Any) -> Any:
        assert path == "/images/export"
        self.downloads += 1
        data = self.archive
        Path(dest).write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if self.corrupt else data)
        return self.headers


def test_worker_fetches_missing_images_and_refuses_damaged_ones(tiny: Dict[str, Any],
                                                                caplog: Any) -> None:
    caplog.set_level("INFO", logger="cdsw_agent.roles.worker")
    client, ref = tiny["client"], tiny["ref"]
    master, damaged = RecordedMaster(tiny), RecordedMaster(tiny, corrupt=True)
    # present with the same id: nothing to fetch
    assert worker.sync_images(client, master, tiny["settings"]) == 0
    assert master.downloads == 0
    client.images.remove(ref, force=True)
    # a damaged copy never reaches Docker and is tried again next time
    assert worker.sync_images(client, damaged, tiny["settings"]) == 0
    assert damaged.downloads == 1 and "checksum mismatch" in caplog.text
    with pytest.raises(Exception):
        client.images.get(ref)
    assert worker.sync_images(client, master, tiny["settings"]) == 1
    assert master.downloads == 1 and client.images.get(ref).id == tiny["id"]
    assert "engine image %s loaded from the master" % ref in caplog.text
    assert not list((Path(tiny["settings"].data_dir) / "tmp").iterdir())  # no spool left
    # another name for an image already here is a tag, not a download
    client.images.get(ref).tag(ref.split(":")[0], "other")
    client.images.remove(ref)
    assert worker.sync_images(client, master, tiny["settings"]) == 1
    assert master.downloads == 1 and client.images.get(ref).id == tiny["id"]


def test_worker_removes_model_images_the_master_no_longer_has(tiny: Dict[str, Any],
                                                              tmp_path: Path,
                                                              caplog: Any) -> None:
    """Model builds reach workers as engine images; once the master has removed one (its model
    was deleted), the worker removes its copy, unless a container still uses it or it is newer
    than the grace period."""
    import datetime as dt

    caplog.set_level("INFO", logger="cdsw_agent.roles.worker")
    client = tiny["client"]
    repository = "cdsw-test/model-%s" % os.urandom(3).hex()
    image = client.images.get(tiny["ref"])
    for tag in ("m1-b1", "m1-b2"):  # another tag of the tiny image: removing it untags
        image.tag(repository, tag)
    # an image of its own, used by a (created, never started) container: Docker refuses
    busy = "%s:m2-b3" % repository
    client.api.import_image_from_file(str(busybox_rootfs(tmp_path / "busy.tar")),
                                      repository=repository, tag="m2-b3",
                                      changes=["LABEL com.cdsw.engine=true"])
    container = client.containers.create(busy, command=["true"])
    try:
        listed = {"%s:m1-b2" % repository, tiny["ref"]}
        # younger than the grace period: nothing goes
        assert worker.prune_model_images(client, listed, repository) == []
        removed = worker.prune_model_images(client, listed, repository, min_age=dt.timedelta(0))
        assert removed == ["%s:m1-b1" % repository], removed
        assert {t for i in client.images.list(name=repository) for t in i.tags
                if t.startswith(repository + ":")} == {"%s:m1-b2" % repository, busy}
        assert "model image %s kept for now" % busy in caplog.text
        assert client.images.get(tiny["ref"]).id == tiny["id"]  # engine images are never touched
        container.remove()
        assert worker.prune_model_images(client, listed, repository,
                                         min_age=dt.timedelta(0)) == [busy]
    finally:
        try:
            container.remove(force=True)
        except Exception:
            pass
        for leftover in client.images.list(name=repository):
            for tag in leftover.tags:
                if tag.startswith(repository + ":"):
                    client.images.remove(tag, force=True)
