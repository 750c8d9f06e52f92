"""Edge bundles: a built model as one signed file that runs on a plain Docker engine.

A bundle is a tar archive that `docker load` reads as it is:

    cdsw-bundle.json      the manifest: model, build, function, request shapes, image, how to run
    index.json, manifest.json, blobs/...   `docker save` of the bundle's image
    cdsw-signature.json   last: an Ed25519 signature, by the site key (signing.py), of a
                          statement naming the sha256 of every byte before this member

The image is the build's image (the engine image plus the project snapshot and what
cdsw-build.sh or requirements.txt installed) with one more layer: the model's description at
EDGE_FILE and a command that serves it on port 8080 (engine/model_edge.py, CDSW's request shape
and the Open Inference Protocol v2), so `docker run -p 8080:8080 IMAGE` answers.

`verify` accepts a bundle only when the signature is the trusted key's, the bytes before it
hash to the signed digest, and what follows it is exactly the archive's zero padding: a bundle
with any byte changed, cut short or extended is refused with one line. `run` verifies, loads,
checks that Docker loaded the very image the manifest names (its content-addressed id), and
starts it. A bare `docker load` checks no signature: trust comes from `cdsw models verify` or
`cdsw models run-bundle`, with the site's public key given to the edge host out of band.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import __version__
from ..engine import inference_v2 as v2
from ..images.recipe import VENV
from ..store.models_models import Model, ModelBuild
from . import signing
from .builds import EDGE_REPOSITORY, IMAGE_REPOSITORY, BuildError, docker_build

FORMAT = "cdsw-model-bundle/1"
MANIFEST = "cdsw-bundle.json"
SIGNATURE = "cdsw-signature.json"
EDGE_FILE = "/opt/cdsw/edge-model.json"
EDGE_MODULE = "cdsw_agent.engine.model_edge"
PORT = 8080
BUNDLE_LABEL = "io.cdsw.edge-bundle"
CHUNK = 1024 * 1024


class BundleError(Exception):
    """str() is one line saying what is wrong and what to do."""


# --- which build

def find_build(s: Session, model_ref: str, build_id: Optional[int]) -> Tuple[Model, ModelBuild]:
    """The model (by number or name) and its build (the given one, else its latest good one)."""
    if model_ref.isdigit():
        model = s.get(Model, int(model_ref))
        models = [model] if model is not None else []
    else:
        models = list(s.scalars(select(Model).where(Model.name == model_ref)))
    if not models:
        raise BundleError("no model %s; `cdsw models export` takes a model's number or name"
                          % model_ref)
    if len(models) > 1:
        raise BundleError("%d models are named %s (numbers %s); give the model's number"
                          % (len(models), model_ref, ", ".join(str(m.id) for m in models)))
    model = models[0]
    query = select(ModelBuild).where(ModelBuild.model_id == model.id)
    if build_id is not None:
        build = s.scalar(query.where(ModelBuild.id == build_id))
        if build is None:
            raise BundleError("model %s has no build %d" % (model.name, build_id))
        if build.status != "succeeded":
            raise BundleError("build %d of model %s %s; export a build that succeeded"
                              % (build.id, model.name, build.status))
    else:
        build = s.scalar(query.where(ModelBuild.status == "succeeded")
                         .order_by(ModelBuild.id.desc()).limit(1))
        if build is None:
            raise BundleError("model %s has no successful build; build it first" % model.name)
    if not build.artifact.startswith(IMAGE_REPOSITORY + ":"):
        raise BundleError("build %d of model %s is a folder made by the local backend, not an "
                          "image; edge bundles are made from builds on the swarm backend"
                          % (build.id, model.name))
    return model, build


def description(model: Model, build: ModelBuild) -> Dict[str, Any]:
    """What the edge replica needs to know (EDGE_FILE in the image)."""
    return {"name": model.name, "model_id": model.id, "build": build.id, "file": build.file,
            "function": build.function, "example_input": model.example_input}


def request_shapes(model: Model) -> Dict[str, Any]:
    example = model.example_input
    v2_inputs = [dict(i, data=[example[i["name"]]] if i["shape"] == [1] else example[i["name"]])
                 for i in v2.metadata(model.name, [], example)["inputs"]]
    return {"cdsw": {"method": "POST", "path": "/model",
                     "body": {"accessKey": "KEY (when the edge host set one)",
                              "request": example}},
            "v2": {"method": "POST", "path": "/v2/models/%s/infer" % model.name,
                   "body": {"inputs": v2_inputs}}}


# --- export

def edge_dockerfile(base: str) -> str:
    return "\n".join([
        "FROM %s" % base,
        "COPY edge-model.json %s" % EDGE_FILE,
        "ENV CDSW_MODEL_EDGE=%s CDSW_MODEL_PORT=%d" % (EDGE_FILE, PORT),
        "EXPOSE %d" % PORT,
        'CMD ["%s/bin/python", "-m", "%s"]' % (VENV, EDGE_MODULE)]) + "\n"


def edge_context(base: str, described: Dict[str, Any]) -> BinaryIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (("Dockerfile", edge_dockerfile(base).encode()),
                           ("edge-model.json", json.dumps(described, indent=1).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what goes through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha256, self.written = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.written

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.written += len(data)
        self.f.write(data)
        return len(data)


def statement_for(digest: str, key_id: str, manifest: Dict[str, Any]) -> bytes:
    return json.dumps({"format": FORMAT, "sha256": digest, "signed_by": key_id,
                       "model": manifest["model"]["name"], "build": manifest["build"]["id"]},
                      sort_keys=True, separators=(",", ":")).encode()


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def write_bundle(out: Path, manifest: Dict[str, Any], image_archive: BinaryIO,
                 key: Any) -> str:
    """Writes the bundle (atomically); returns the signed sha256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + out.name + ".", dir=str(out.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            hashing = _Hashing(f)  # type: ignore[arg-type]
            with tarfile.open(fileobj=hashing, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
                with tarfile.open(fileobj=image_archive, mode="r:") as saved:
                    for member in saved:
                        if member.name in (MANIFEST, SIGNATURE):
                            raise BundleError("docker save wrote a %s of its own" % member.name)
                        tar.addfile(member, saved.extractfile(member) if member.isfile()
                                    else None)
                digest = hashing.sha256.hexdigest()
                statement = statement_for(digest, signing.fingerprint(key), manifest)
                _add(tar, SIGNATURE, json.dumps({"statement": statement.decode(),
                                                 "signature": signing.sign(key, statement)}
                                                ).encode())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digest


def export(s: Session, settings: Any, client: Any, model_ref: str, build_id: Optional[int],
           out: Path, write: Callable[[str], None] = lambda line: None) -> Dict[str, Any]:
    """Makes the bundle of a model's build from the master's Docker; returns its manifest."""
    import docker.errors

    from ..images.transfer import save_image

    model, build = find_build(s, model_ref, build_id)
    key = signing.site_key(settings)
    described = description(model, build)
    try:
        client.images.get(build.artifact)
    except docker.errors.ImageNotFound:
        raise BundleError("the image %s of build %d is not on the master's Docker (removed?); "
                          "build the model again" % (build.artifact, build.id))
    ref = "%s-%d:b%d" % (EDGE_REPOSITORY, model.id, build.id)
    try:
        docker_build(client, build.artifact, Path("."), ref,
                     {BUNDLE_LABEL: "%d/%d" % (model.id, build.id)}, write,
                     context=edge_context(build.artifact, described))
    except BuildError as e:
        raise BundleError("the bundle's image could not be made: %s" % e)
    image = client.images.get(ref)
    manifest = {
        "format": FORMAT, "workbench_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "model": {"id": model.id, "name": model.name, "description": model.description,
                  "project": model.project.name if model.project else None,
                  "file": build.file, "function": build.function,
                  "example_input": model.example_input},
        "build": {"id": build.id, "image": build.artifact,
                  "finished_at": build.finished_at.isoformat() if build.finished_at else None},
        "image": {"ref": ref, "id": image.id},
        "request_shapes": request_shapes(model),
        "run": {"port": PORT, "command": "docker run -p %d:%d %s" % (PORT, PORT, ref),
                "access_key_env": "CDSW_MODEL_ACCESS_KEY"},
        "signed_by": signing.fingerprint(key)}
    write("saving image %s" % ref)
    with tempfile.TemporaryFile(dir=str(out.parent if out.parent.exists() else Path("."))) as f:
        save_image(client, ref, f)
        f.seek(0)
        digest = write_bundle(out, manifest, f, key)
    # the tag stays (the build's cache: exporting again gives the same image id); it goes with
    # the build (builds.remove_artifacts)
    write("bundle %s: model %s build %d, sha256 %s, signed by %s"
          % (out, model.name, build.id, digest, manifest["signed_by"]))
    return manifest


# --- verify and run

def _members(f: BinaryIO, name: str) -> List[tarfile.TarInfo]:
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            return tar.getmembers()
    except (tarfile.TarError, EOFError, OSError):
        raise BundleError("%s is not a model bundle (not a tar archive, or cut short); do not "
                          "run it" % name)


def verify(path: Path, key: Any) -> Dict[str, Any]:
    """The manifest of a bundle signed by `key` (a public key) and unchanged since; else
    BundleError with one line."""
    name = str(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BundleError("cannot read %s: %s" % (name, e.strerror or e))
    with f:
        members = _members(f, name)
        if not members or members[-1].name != SIGNATURE or members[0].name != MANIFEST \
                or [m.name for m in members].count(SIGNATURE) != 1:
            raise BundleError("%s is not a complete model bundle (no signature at its end: cut "
                              "short or not made by `cdsw models export`); do not run it" % name)
        sig = members[-1]
        f.seek(sig.offset_data)
        try:
            signed = json.loads(f.read(sig.size))
            statement_bytes = signed["statement"].encode()
            statement = json.loads(statement_bytes)
            signature = signed["signature"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BundleError("%s has a damaged signature; do not run it" % name)
        trusted = signing.fingerprint(key)
        if statement.get("signed_by") != trusted:
            raise BundleError("%s is signed by key %s, not by the trusted key %s; get the "
                              "bundle from that site, or trust its key with --key"
                              % (name, statement.get("signed_by"), trusted))
        if not signing.signed_by(key, statement_bytes, signature) \
                or statement.get("format") != FORMAT:
            raise BundleError("%s has a signature that is not the trusted key's (%s); do not run "
                              "it" % (name, trusted))
        f.seek(0)
        h, left = hashlib.sha256(), sig.offset
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        f.seek(sig.offset)  # its header, byte for byte as written (tarfile skips some bytes)
        header = f.read(sig.offset_data - sig.offset)
        f.seek(sig.offset_data + sig.size)
        tail = f.read()
        padding = -(sig.offset_data + sig.size) % tarfile.BLOCKSIZE
        if left or h.hexdigest() != statement.get("sha256") \
                or len(tail) < padding + 2 * tarfile.BLOCKSIZE \
                or (sig.offset_data + sig.size + len(tail)) % tarfile.RECORDSIZE \
                or tail.count(0) != len(tail) \
                or header != _info(SIGNATURE, sig.size).tobuf(tarfile.PAX_FORMAT, "utf-8",
                                                              "surrogateescape"):
            raise BundleError("%s was changed after it was signed (its bytes do not match the "
                              "signature); do not run it" % name)
        f.seek(members[0].offset_data)
        try:
            manifest = json.loads(f.read(members[0].size))
        except ValueError:
            manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError("%s is signed but its manifest is not a %s manifest; this "
                          "`cdsw` cannot run it" % (name, FORMAT))
    return manifest


def run(path: Path, key: Any, client: Any, port: int = PORT, name: Optional[str] = None,
        access_key: str = "", verified: Optional[Dict[str, Any]] = None
        ) -> Tuple[Dict[str, Any], Any]:
    """Verifies the bundle (unless `verified` is its manifest, just checked), loads its image,
    checks it is the signed one, and starts it; (manifest, container)."""
    import docker.errors

    manifest = verified if verified is not None else verify(path, key)
    image = manifest["image"]
    try:
        with open(path, "rb") as f:
            client.images.load(f)
        loaded = client.images.get(image["ref"])
    except docker.errors.ImageNotFound:
        raise BundleError("Docker did not load %s from %s" % (image["ref"], path))
    except docker.errors.APIError as e:
        raise BundleError("Docker refused to load %s: %s" % (path, str(e.explanation or e)
                                                             .strip().splitlines()[0]))
    if loaded.id != image["id"]:  # the file changed between verify and load
        try:  # its tag must not be left pointing at an image nobody signed
            client.images.remove(loaded.id, force=True)
        except docker.errors.APIError:
            pass
        raise BundleError("Docker loaded image %s from %s, not the signed %s; do not run it"
                          % (loaded.id, path, image["id"]))
    environment = {"CDSW_MODEL_ACCESS_KEY": access_key} if access_key else {}
    try:
        container = client.containers.run(
            image["id"], detach=True, name=name, ports={"%d/tcp" % PORT: port},
            environment=environment, restart_policy={"Name": "unless-stopped"},
            labels={BUNDLE_LABEL: "%s/%s" % (manifest["model"]["id"], manifest["build"]["id"])})
    except docker.errors.APIError as e:
        raise BundleError("Docker cannot start the bundle's image: %s"
                          % str(e.explanation or e).strip().splitlines()[0])
    return manifest, container
