"""One-host workbench: the CDSW_DOCKER role as a child process, the engine image, the swarm.

`cdsw standalone` calls `prepare_engines`; when no Docker engine can run here it says so loudly
and the workbench runs engines as local processes instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from sqlalchemy import select, update

from .render import render
from .roles import docker as docker_role
from .settings import Settings
from .store.db import Database
from .store.models import EngineImage

Echo = Callable[[str], None]
DOCKER_START_SECONDS = 90


@dataclass
class Engines:
    settings: Settings
    docker: Optional[subprocess.Popen]  # the CDSW_DOCKER role we started, if any
    image: str = ""

    def stop(self) -> None:
        if self.docker is not None and self.docker.poll() is None:
            self.docker.send_signal(signal.SIGTERM)
            try:
                self.docker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.docker.kill()


def _properties_file(settings: Settings) -> Path:
    """The effective settings as cdsw.properties (0600: it holds secrets) for the child role."""
    path = Path(settings.data_dir) / "standalone.properties"
    tmp = path.with_name(".standalone.properties.tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(render("cdsw.properties.j2", settings, reveal_secrets=True))
    os.replace(tmp, path)
    return path


def start_docker(settings: Settings, echo: Echo) -> Optional[subprocess.Popen]:
    """Start `cdsw role docker start` in the background and wait until it answers.
    Returns None (after saying why) when Docker cannot run here."""
    if os.geteuid() != 0:
        echo("!!! Docker needs root: run `cdsw standalone` as root to run engines in containers")
        return None
    if shutil.which(settings.dockerd_path) is None:
        echo("!!! %s is not installed (apt-get install docker.io); scripts/standalone.sh installs it"
             % settings.dockerd_path)
        return None
    problems = docker_role.prepare(settings)
    if problems:
        echo("!!! the Docker role cannot start here: " + "; ".join(problems))
        return None
    log = Path(settings.data_dir) / "docker-role.log"
    echo("==> starting the CDSW_DOCKER role (log: %s)" % log)
    echo("    storage driver %s: %s" % docker_role.choose_storage_driver(settings))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdsw_agent.cli.main", "--properties", str(_properties_file(settings)),
             "role", "docker", "start"], stdout=out, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("CDSW_")},
            start_new_session=True)  # Ctrl-C reaches us; we stop dockerd in order
    deadline = time.monotonic() + DOCKER_START_SECONDS
    while time.monotonic() < deadline:
        if docker_role.answers(settings.docker_host, timeout=2):
            return proc
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            echo("!!! the Docker role exited (%s): %s" % (proc.returncode, tail[0][:300]))
            return None
        time.sleep(0.5)
    proc.terminate()
    echo("!!! Docker did not answer on %s within %d s; see %s"
         % (settings.docker_host, DOCKER_START_SECONDS, log))
    return None


def ensure_engine_image(settings: Settings, db: Database, echo: Echo) -> str:
    """Build (or find, by content tag) the engine image and register it as the default."""
    import docker

    from .images import Progress, Recipe, build_image

    client = docker.DockerClient(base_url=settings.docker_host, timeout=600)
    try:
        echo("==> engine image (the first build takes a few minutes; later starts reuse it)")
        result = build_image(client, Recipe(), Path(settings.data_dir) / "images-cache",
                             Progress(echo), mirror_setting=settings.engine_debian_mirror,
                             proxies={"http_proxy": settings.http_proxy,
                                      "https_proxy": settings.https_proxy,
                                      "no_proxy": settings.no_proxy})
    finally:
        client.close()
    repository, tag = result.image.rsplit(":", 1)
    with db.session() as s:
        row = s.scalar(select(EngineImage).where(EngineImage.repository == repository,
                                                 EngineImage.tag == tag))
        if row is None:
            s.execute(update(EngineImage).values(is_default=False))
            s.add(EngineImage(repository=repository, tag=tag, is_default=True,
                              description="built by cdsw standalone", kernels=["python3"],
                              editors=["workbench"]))
    return result.image


def prepare_engines(settings: Settings, db: Database, echo: Echo) -> Engines:
    """Docker, the engine image and the swarm orchestrator, or the local fallback."""
    if settings.orchestrator == "local":
        return Engines(settings, None)
    docker_proc = None
    if not docker_role.answers(settings.docker_host, timeout=2):
        docker_proc = start_docker(settings, echo)
        if docker_proc is None:
            return Engines(settings.with_overrides(orchestrator="local"), None)
    engines = Engines(settings, docker_proc)
    try:
        engines.image = ensure_engine_image(settings, db, echo)
    except Exception as e:  # a failed build must not leave dockerd behind; say why in one line
        engines.stop()
        echo("!!! the engine image could not be built: %s" % str(e).splitlines()[0][:300])
        return Engines(settings.with_overrides(orchestrator="local"), None)
    if settings.source_of("session_warm_engines").kind == "default":
        # one engine waits for the next session (sessions/warm_pool.py): standalone runs as
        # root on its one node, where no profile reserves anything by default
        engines.settings = settings.with_overrides(session_warm_engines=1)
    return engines
