"""pytest fixtures for a real Docker engine and the engine image. Use from a test module:

    from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401

`docker_engine` starts (or reuses) the test dockerd of scripts/ci/start_dockerd.sh and yields an
object with `.url` (unix:///...) and `.client` (docker.DockerClient). `engine_image` builds the
engine image once per session (cached across sessions, see CACHE_DIR) and returns its reference.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = ROOT / "scripts" / "ci" / "start_dockerd.sh"
RUN_DIR = Path(os.environ.get("CDSW_TEST_DOCKER_RUN", "/var/run/cdsw-test"))
# Kept between sessions next to the test dockerd's data root, so only the first session on a
# machine pays for debootstrap and the wheel downloads.
CACHE_DIR = Path(os.environ.get("CDSW_TEST_IMAGES_CACHE", "/var/lib/cdsw-test/images-cache"))


@dataclass
class DockerEngine:
    url: str
    client: Any  # docker.DockerClient
    started_here: bool

    def remove_containers(self, label: str) -> None:
        """Removes every container carrying label (KEY or KEY=VALUE), running or not."""
        for c in self.client.containers.list(all=True, filters={"label": label}):
            c.remove(force=True)


def _answers(url: str) -> bool:
    import docker

    try:
        docker.DockerClient(base_url=url, version="auto", timeout=5).ping()
        return True
    except Exception:
        return False


def _stop(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A Docker daemon for the tests (its own socket, data root and exec root)."""
    import docker

    if os.geteuid() != 0:
        pytest.skip("Docker tests start their own dockerd, which needs root")
    if not shutil.which("dockerd") or not shutil.which("docker"):
        pytest.skip("Docker tests need dockerd and the docker CLI: apt-get install docker.io")
    url = "unix://%s" % (RUN_DIR / "docker.sock")
    already = _answers(url)
    proc = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:  # installed but does not start: a failure to look at, not a skip
        pytest.fail("scripts/ci/start_dockerd.sh failed: %s" % proc.stderr.strip()[-800:], pytrace=False)
    url = proc.stdout.strip().splitlines()[-1]
    client = docker.DockerClient(base_url=url, version="auto", timeout=300)
    engine = DockerEngine(url=url, client=client, started_here=not already)
    try:
        yield engine
    finally:
        client.close()
        if engine.started_here and not os.environ.get("CDSW_TEST_KEEP_DOCKERD"):
            _stop(RUN_DIR / "dockerd.pid")


@pytest.fixture(scope="session")
def engine_image_build(docker_engine: DockerEngine) -> Any:
    """The BuildResult of building (or reusing) the default engine image in this session."""
    from cdsw_agent.images import Progress, Recipe, build_image

    lines: List[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    try:
        return build_image(docker_engine.client, Recipe(), CACHE_DIR, Progress(echo))
    except Exception as e:  # the build log says why; keep the whole progress in the failure
        pytest.fail("engine image build failed: %s\n%s" % (e, "\n".join(lines[-40:])), pytrace=False)


@pytest.fixture(scope="session")
def engine_image(engine_image_build: Any) -> str:
    """Reference (cdsw/engine:TAG) of the engine image, built once per session."""
    return engine_image_build.image
