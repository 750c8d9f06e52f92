"""Model builds: the project files frozen with what the model needs installed.

A build snapshots the project folder, then runs the project's `cdsw-build.sh` if it has one,
else installs `requirements.txt` if it has one (CDSW's rule). On the swarm backend the result is
an image made with the Docker SDK on the master's dockerd (the orchestrator's): the engine image
plus the snapshot at /home/cdsw; it inherits the engine image's `com.cdsw.engine` label, so
workers fetch it exactly like engine images (roles/worker.py sync_images). On the local backend
the snapshot directory itself is the build (no Docker). The log is written as the build goes,
so the API shows progress; a build the master was killed in the middle of ends as failed.

A build acts as nobody: whoever started it, the project's files (cdsw-build.sh) run with no
user identity, no project or site variables and no credential. In a Docker build they see only
the engine image's own environment; on the local backend they get a minimal environment
(build_environment) without HADOOP_USER_NAME, Kerberos caches or the master's variables.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional

from sqlalchemy import select

from ..images.recipe import ENGINE_HOME, ENGINE_UID, VENV
from ..orchestrators import Orchestrator, OrchestratorError
from ..orchestrators.reasons import first_line
from ..projects import safe_fs
from ..settings import Settings
from ..store.db import Database
from ..store.models import utcnow
from ..store.models_models import BUILD_ACTIVE, Model, ModelBuild
from ..workloads.engine import EngineError, image_name

log = logging.getLogger(__name__)

BUILD_SCRIPT = "cdsw-build.sh"
REQUIREMENTS = "requirements.txt"
LOCAL_PACKAGES = ".cdsw-packages"  # where a local build installs requirements.txt
BUILD_TIMEOUT_SECONDS = 3600
IMAGE_REPOSITORY = "cdsw/model"
EDGE_REPOSITORY = "cdsw-edge/model"  # a build's edge bundle image (bundles.py): -MODEL:bBUILD
BUILD_LABEL = "io.cdsw.model-build"
MODEL_LABEL = "io.cdsw.model"
SKIPPED = frozenset((".git", "__pycache__", ".ipynb_checkpoints"))  # names, at every level
_IMAGE_TAG = re.compile(r"m(\d+)-b(\d+)")  # IMAGE_REPOSITORY's tags


def model_of_image(ref: str) -> Optional[int]:
    """The model a build's image (IMAGE_REPOSITORY:m<model>-b<build>) is of; None for any other
    image."""
    repository, _, tag = ref.rpartition(":")
    found = _IMAGE_TAG.fullmatch(tag)
    return int(found.group(1)) if repository == IMAGE_REPOSITORY and found else None


class BuildError(Exception):
    """The build failed; str() is its one-line reason."""


def builds_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "models" / "builds"


def snapshot(project_dir: Path, dest: Path) -> None:
    """A copy of the project folder (symbolic links stay links: nothing outside is read), made
    through directory descriptors so a folder swapped for a link meanwhile is not entered."""
    try:
        src = os.open(str(project_dir), safe_fs.DIR_FLAGS)
    except OSError:
        raise BuildError("the project folder %s is missing" % project_dir)
    try:
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        out = os.open(str(dest), safe_fs.DIR_FLAGS)
        try:
            safe_fs.copy_tree(src, out, skip=SKIPPED.__contains__)
        finally:
            os.close(out)
    finally:
        os.close(src)


def dockerfile(base: str, files: Path) -> str:
    lines = ["FROM %s" % base,
             "COPY --chown=%d:%d files/ %s/" % (ENGINE_UID, ENGINE_UID, ENGINE_HOME),
             "WORKDIR %s" % ENGINE_HOME]
    if (files / BUILD_SCRIPT).is_file():
        lines.append('RUN ["bash", "%s"]' % BUILD_SCRIPT)  # as the engine user, like CDSW
    elif (files / REQUIREMENTS).is_file():
        # into the engine's virtualenv (root owns it), where the replica's Python looks
        lines += ["USER root",
                  'RUN ["%s/bin/pip", "install", "--no-cache-dir", "-r", "%s"]'
                  % (VENV, REQUIREMENTS),
                  "USER %d:%d" % (ENGINE_UID, ENGINE_UID)]
    return "\n".join(lines) + "\n"


def build_context(base: str, files: Path) -> BinaryIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = dockerfile(base, files).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.add(str(files), arcname="files")
    out.seek(0)
    return out


def docker_build(client: Any, base: str, files: Path, ref: str, labels: Dict[str, str],
                 write: Callable[[str], None], context: Optional[BinaryIO] = None) -> str:
    """Builds ref from base + files with the daemon's builder, streaming its output (from
    `context` instead when given: a build context tar whose Dockerfile starts FROM base)."""
    import docker.errors
    import requests

    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        raise BuildError("engine image %s is not on the master's Docker; build it with "
                         "`cdsw images build`" % base)
    write("building image %s from %s" % (ref, base))
    try:
        stream = client.api.build(fileobj=context or build_context(base, files),
                                  custom_context=True,
                                  tag=ref, rm=True, forcerm=True, pull=False, decode=True,
                                  labels=labels, timeout=BUILD_TIMEOUT_SECONDS)
        for chunk in stream:
            if "stream" in chunk:
                for line in str(chunk["stream"]).splitlines():
                    if line.strip():
                        write(line)
            if "error" in chunk:
                raise BuildError(str(chunk["error"]).strip().splitlines()[-1][:500])
    except docker.errors.APIError as e:  # Docker's words go to the build log, not the reason
        write("docker: %s" % first_line(e.explanation or e))
        raise BuildError("Docker refused to build the image; the build log says why")
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        log.warning("model image build: %s: %s", type(e).__name__, first_line(e))
        raise BuildError("Docker on the master does not answer; check the Docker role "
                         "(cdsw status)")
    return ref


# what a local build keeps of the master's environment: finding programs and packages, nothing
# that names a person or holds a credential
BUILD_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV",
                  "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL",
                  "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "PIP_FIND_LINKS",
                  "PIP_NO_INDEX")


def build_environment(settings: Settings, files: Path,
                      base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a local build: no user identity (no HADOOP_USER_NAME, CDSW_USER,
    KRB5CCNAME...), no project or site variables, no token; HOME is the snapshot."""
    source = os.environ if base is None else base
    env = {k: source[k] for k in BUILD_ENV_KEEP if k in source}
    proxies = {"HTTP_PROXY": settings.http_proxy, "HTTPS_PROXY": settings.https_proxy,
               "NO_PROXY": settings.no_proxy}
    env.update({k: v for k, v in proxies.items() if v})
    env.update(HOME=str(files), CDSW_BUILD="1", PYTHONNOUSERSITE="1")
    return env


def local_build(files: Path, write: Callable[[str], None],
                env: Optional[Dict[str, str]] = None) -> None:
    """Runs cdsw-build.sh (or pip install --target) in the snapshot, as the master's OS user
    (the local backend is for a laptop and tests) but with no user identity (`env`, by default
    a minimal environment without one)."""
    if (files / BUILD_SCRIPT).is_file():
        argv: List[str] = ["bash", BUILD_SCRIPT]
    elif (files / REQUIREMENTS).is_file():
        argv = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--target",
                LOCAL_PACKAGES, "-r", REQUIREMENTS]
    else:
        write("no %s or %s: nothing to install" % (BUILD_SCRIPT, REQUIREMENTS))
        return
    write("running %s" % " ".join(argv[:2] if argv[0] == "bash" else argv[3:]))
    if env is None:
        env = {k: os.environ[k] for k in BUILD_ENV_KEEP if k in os.environ}
        env["HOME"] = str(files)
    proc = subprocess.Popen(argv, cwd=str(files), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for raw in proc.stdout:
        write(raw.decode("utf-8", "replace").rstrip("\n"))
    code = proc.wait(timeout=BUILD_TIMEOUT_SECONDS)
    if code != 0:
        raise BuildError("%s exited with code %d" % (argv[1] if argv[0] == "bash" else "pip",
                                                      code))


class Builder:
    """Runs builds in background threads and records them."""

    def __init__(self, db: Database, settings: Settings,
                 orchestrator: Callable[[], Orchestrator]):
        self.db, self.settings, self._orchestrator = db, settings, orchestrator
        self._threads: Dict[int, threading.Thread] = {}

    def log_file(self, build: ModelBuild) -> Path:
        return Path(self.settings.data_dir) / build.log_path

    def start(self, build_id: int) -> None:
        t = threading.Thread(target=self.run, args=(build_id,), daemon=True,
                             name="cdsw-model-build-%d" % build_id)
        self._threads[build_id] = t
        t.start()

    def wait(self, build_id: int, timeout: Optional[float] = None) -> None:
        t = self._threads.get(build_id)
        if t is not None:
            t.join(timeout)

    def fail_interrupted(self) -> None:
        """Builds a previous master left active cannot be resumed: they end as failed."""
        with self.db.session() as s:
            for b in s.scalars(select(ModelBuild).where(ModelBuild.status.in_(BUILD_ACTIVE))):
                if b.id not in self._threads:
                    b.status, b.finished_at = "failed", utcnow()
                    b.reason = "the master stopped during the build; start a new build"

    def run(self, build_id: int) -> None:
        try:
            self._run(build_id)
        except Exception as e:  # the database went away (a master shutting down...)
            log.warning("model build %d not recorded: %s", build_id,
                        (str(e).strip().splitlines() or [type(e).__name__])[0])
        finally:
            self._threads.pop(build_id, None)

    def _run(self, build_id: int) -> None:
        with self.db.session() as s:
            build = s.get(ModelBuild, build_id)
            assert build is not None
            build.status, build.started_at = "building", utcnow()
            model: Model = build.model
            project_dir = Path(self.settings.projects_dir) / str(model.project_id)
            engine_image_id, project = model.engine_image_id, model.project
            path = self.log_file(build)
            s.flush()
            try:
                base = image_name(s, engine_image_id, project, required=False)
            except EngineError as e:
                base = "none"
                log.warning("model build %d: %s", build_id, e)
        path.parent.mkdir(parents=True, exist_ok=True)
        files = builds_dir(self.settings) / str(build_id) / "files"
        status, reason, artifact = "failed", "", ""
        with open(path, "a", encoding="utf-8", buffering=1) as out:
            def write(line: str) -> None:
                out.write(line + "\n")

            try:
                write("snapshot of the project files")
                snapshot(project_dir, files)
                orchestrator = self._orchestrator()
                if orchestrator.name == "local":
                    local_build(files, write, build_environment(self.settings, files))
                    artifact = str(files.relative_to(Path(self.settings.data_dir)))
                else:
                    if base == "none":
                        raise BuildError("no engine image: choose one for the model, set the "
                                         "project's default, or mark a site default image")
                    client = getattr(orchestrator, "client", None)
                    if client is None:
                        raise BuildError("the %s backend cannot build images"
                                         % orchestrator.name)
                    ref = "%s:m%d-b%d" % (IMAGE_REPOSITORY, model.id, build_id)
                    artifact = docker_build(client, base, files, ref,
                                            {BUILD_LABEL: str(build_id),
                                             MODEL_LABEL: str(model.id)}, write)
                status = "succeeded"
                write("build succeeded: %s" % artifact)
            except BuildError as e:
                reason = str(e)
            except (OrchestratorError, OSError, subprocess.SubprocessError) as e:
                reason = "build failed: %s" % (str(e).strip().splitlines() or [type(e).__name__])[0]
            except Exception:  # a bug must end the build, not leave it building forever
                log.exception("model build %d failed", build_id)
                reason = "build failed because of an internal error (the master's log has " \
                         "the details)"
            if reason:
                write(reason)
        with self.db.session() as s:
            build = s.get(ModelBuild, build_id)
            if build is not None:
                build.status, build.reason, build.artifact = status, reason, artifact
                build.finished_at = utcnow()
        log.info("model build %d %s%s", build_id, status, " (%s)" % reason if reason else "")


IMAGE_IN_USE_WAIT_SECONDS = 180.0  # a deleted model's replica containers are still stopping


def remove_artifacts(settings: Settings, orchestrator: Optional[Orchestrator],
                     builds: List[ModelBuild]) -> Optional[threading.Thread]:
    """Removes a deleted model's snapshots and images in the background, so deleting answers at
    once. Its replicas' containers may still be stopping and hold the image (Docker answers 409
    until they are gone): each image is retried until it is free, then removed, so no build
    leaves an image behind on the master's dockerd."""
    refs = []
    for b in builds:
        shutil.rmtree(builds_dir(settings) / str(b.id), ignore_errors=True)
        if b.log_path:
            (Path(settings.data_dir) / b.log_path).unlink(missing_ok=True)
        if b.artifact.startswith(IMAGE_REPOSITORY + ":"):
            refs += ["%s-%d:b%d" % (EDGE_REPOSITORY, b.model_id, b.id), b.artifact]
    client = getattr(orchestrator, "client", None)
    if client is None or not refs:
        return None
    thread = threading.Thread(target=_remove_images, args=(client, refs),
                              name="model-image-removal", daemon=True)
    thread.start()
    return thread


def _remove_images(client: Any, refs: List[str],
                   wait: float = IMAGE_IN_USE_WAIT_SECONDS) -> None:
    import docker.errors

    deadline = time.monotonic() + wait
    for ref in refs:
        while True:
            try:
                client.images.remove(ref, noprune=False)
                log.info("model image %s removed", ref)
            except docker.errors.ImageNotFound:
                pass  # never made (an edge bundle nobody asked for) or gone already
            except docker.errors.APIError as e:
                if e.status_code == 409 and time.monotonic() < deadline:
                    time.sleep(2)  # in use by a replica container that is stopping
                    continue
                log.warning("model image %s kept: %s", ref, json.dumps(str(e))[:200])
            except Exception as e:  # the daemon went away...
                log.warning("model image %s kept: %s", ref, json.dumps(str(e))[:200])
            break
