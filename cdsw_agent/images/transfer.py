"""Moving engine images between hosts.

Without a registry (the default), the master streams `docker save` output to the workers, which
`docker load` it only after its sha256 matches. With settings.engine_registry set, images are
pushed to and pulled from that registry instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, List, Optional, Tuple, Union

from ..errors import UserError
from .recipe import REPOSITORY
from .util import CHUNK, sha256_file

SIDECAR_SUFFIX = ".sha256"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class SavedImage:
    ref: str
    sha256: str
    size: int
    path: Optional[Path] = None  # set when saved to a file (its checksum is beside it)


def _docker_errors() -> Any:
    import docker.errors

    return docker.errors


def save_image(client: Any, ref: str, out: Union[Path, str, BinaryIO]) -> SavedImage:
    """Streams `docker save ref` into a file (written atomically, with FILE.sha256 beside it in
    sha256sum format) or into an open binary stream. Returns the archive's sha256 and size."""
    errors = _docker_errors()
    try:
        client.images.get(ref)
        chunks = client.api.get_image(ref, chunk_size=CHUNK)
    except errors.ImageNotFound:
        raise UserError("no image %s here; build it with `cdsw images build` or pull it" % ref)
    except errors.APIError as e:
        raise UserError("docker save %s failed: %s" % (ref, e.explanation or e))
    if isinstance(out, (str, Path)):
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=str(path.parent))
        try:
            with os.fdopen(fd, "wb") as f:
                digest, size = _copy(chunks, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp) if os.path.exists(tmp) else None
            raise
        Path(str(path) + SIDECAR_SUFFIX).write_text("%s  %s\n" % (digest, path.name))
        return SavedImage(ref, digest, size, path)
    digest, size = _copy(chunks, out)
    return SavedImage(ref, digest, size)


def _copy(chunks: Iterable[bytes], out: BinaryIO) -> Tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        h.update(chunk)
        out.write(chunk)
        size += len(chunk)
    out.flush()
    return h.hexdigest(), size


def read_sidecar(path: Path) -> Optional[str]:
    """The checksum in FILE.sha256 (sha256sum format), or None when there is no such file."""
    side = Path(str(path) + SIDECAR_SUFFIX)
    if not side.is_file():
        return None
    words = side.read_text().split()
    if not words or not _SHA256.match(words[0].lower()):
        raise UserError("%s does not hold a sha256 checksum" % side)
    return words[0].lower()


def load_image(client: Any, source: Union[Path, str, BinaryIO], sha256: Optional[str] = None,
               spool_dir: Optional[Path] = None) -> List[str]:
    """`docker load` of a saved image, only once its sha256 matches.

    source is a file (whose checksum defaults to FILE.sha256) or a binary stream, which is
    spooled to a temporary file in spool_dir while hashing, so nothing unverified reaches Docker.
    Returns the loaded image references (repository:tag, or image ids for untagged images)."""
    expected = sha256.lower() if sha256 else None
    if expected is not None and not _SHA256.match(expected):
        raise UserError("%r is not a sha256 checksum (64 hex digits)" % sha256)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise UserError("no image archive at %s" % path)
        expected = expected or read_sidecar(path)
        if expected is None:
            raise UserError("no checksum for %s: pass --sha256 or put %s%s beside it"
                            % (path, path.name, SIDECAR_SUFFIX))
        actual = sha256_file(path)
        _check(actual, expected, str(path))
        return _load_file(client, path)
    if expected is None:
        raise UserError("loading an image from a stream needs its sha256 checksum")
    h = hashlib.sha256()
    with tempfile.NamedTemporaryFile(prefix="cdsw-image-", suffix=".tar",
                                     dir=str(spool_dir) if spool_dir else None) as spool:
        for chunk in iter(lambda: source.read(CHUNK), b""):
            h.update(chunk)
            spool.write(chunk)
        spool.flush()
        _check(h.hexdigest(), expected, "the image stream")
        return _load_file(client, Path(spool.name))


def _check(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise UserError("checksum mismatch for %s: expected sha256 %s, got %s; the copy is "
                        "damaged or not the image asked for, fetch it again" % (what, expected, actual))


def _load_file(client: Any, path: Path) -> List[str]:
    errors = _docker_errors()
    loaded: List[str] = []
    try:
        with open(path, "rb") as f:
            for event in client.api.load_image(f):
                if "error" in event:
                    raise UserError("docker load failed: %s" % event["error"])
                text = event.get("stream", "")
                for prefix in ("Loaded image: ", "Loaded image ID: "):
                    if text.startswith(prefix):
                        loaded.append(text[len(prefix):].strip())
    except errors.APIError as e:
        raise UserError("docker load failed: %s" % (e.explanation or e))
    if not loaded:
        raise UserError("docker load of %s loaded no image; is it a `docker save` archive?" % path)
    return loaded


# ----------------------------------------------------------------------------- registry


def registry_ref(registry: str, tag: str, repository: str = REPOSITORY) -> str:
    """REGISTRY/REPOSITORY:TAG, e.g. registry.example.com:5000/cdsw/engine:py-0.1.0-0123456789ab."""
    registry = registry.strip().rstrip("/")
    for scheme in ("https://", "http://"):
        if registry.startswith(scheme):
            registry = registry[len(scheme):]
    if not registry or "/" in registry.split(":", 1)[0] or " " in registry:
        raise UserError("engine_registry %r is not a registry address; expected HOST[:PORT]" % registry)
    return "%s/%s:%s" % (registry, repository, tag)


def _tag_of(ref: str) -> str:
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        raise UserError("image reference %r has no tag; expected %s:TAG" % (ref, REPOSITORY))
    return tag


def _stream_errors(events: Iterable[dict], action: str, ref: str) -> None:
    for event in events:
        if "error" in event or "errorDetail" in event:
            detail = event.get("error") or (event.get("errorDetail") or {}).get("message", "")
            raise UserError("%s %s failed: %s" % (action, ref, detail))


def content_tag_of(client: Any, ref: str) -> str:
    """The content-tagged name (REPOSITORY:flavour-version-hash) of the image ref names, so that
    moving tags such as cdsw/engine:latest are never what goes to a registry."""
    errors = _docker_errors()
    try:
        image = client.images.get(ref)
    except errors.ImageNotFound:
        raise UserError("no image %s here; build it with `cdsw images build` first" % ref)
    if ref in image.tags and not _tag_of(ref).startswith("latest"):
        return ref
    for t in sorted(image.tags):
        if t.startswith(REPOSITORY + ":") and not _tag_of(t).startswith("latest"):
            return t
    raise UserError("image %s has no content tag (%s:FLAVOUR-VERSION-HASH); rebuild it with "
                    "`cdsw images build`" % (ref, REPOSITORY))


def push_image(client: Any, ref: str, registry: str) -> str:
    """Tags the local image ref for the registry and pushes it; returns the registry reference."""
    errors = _docker_errors()
    remote = registry_ref(registry, _tag_of(ref))
    repo, tag = remote.rsplit(":", 1)
    try:
        client.images.get(ref).tag(repo, tag)
        _stream_errors(client.api.push(repo, tag=tag, stream=True, decode=True), "docker push", remote)
    except errors.ImageNotFound:
        raise UserError("no image %s here; build it with `cdsw images build` first" % ref)
    except errors.APIError as e:
        raise UserError("docker push %s failed: %s" % (remote, e.explanation or e))
    return remote


def pull_image(client: Any, tag: str, registry: str) -> str:
    """Pulls REPOSITORY:tag from the registry and tags it locally as REPOSITORY:tag, the name the
    rest of the workbench uses. Returns the local reference."""
    errors = _docker_errors()
    remote = registry_ref(registry, tag)
    repo = remote.rsplit(":", 1)[0]
    try:
        _stream_errors(client.api.pull(repo, tag=tag, stream=True, decode=True), "docker pull", remote)
        client.images.get(remote).tag(REPOSITORY, tag)
    except errors.ImageNotFound:
        raise UserError("docker pull %s reported success but the image is missing" % remote)
    except errors.APIError as e:
        raise UserError("docker pull %s failed: %s" % (remote, e.explanation or e))
    return "%s:%s" % (REPOSITORY, tag)
