"""The README's first command as an evaluator runs it: `cdsw standalone` as root on a host with
Docker installed starts the CDSW_DOCKER role, builds the engine image, makes the swarm and runs
work in containers; SIGTERM stops the master and its dockerd."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .docker_fixtures import CACHE_DIR
from .test_master_process import env_for, free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(1500)]


def _wait(url: str, proc: subprocess.Popen, seconds: float) -> None:  # type: ignore[type-arg]
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("standalone exited with %s" % proc.returncode)
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(1)
    raise AssertionError("no answer from %s within %d s" % (url, seconds))


def _rewritten_while_running(s: requests.Session, base: str, pid: int, data: Path) -> None:
    s.put(base + "/api/v1/projects/%d/files/content" % pid, json={
        "path": "race.sh", "content": "echo started\nsleep 8\necho original\n"}
    ).raise_for_status()
    job = s.post(base + "/api/v1/projects/%d/jobs" % pid,
                 json={"name": "race", "script": "race.sh"}).json()
    run = s.post(base + "/api/v1/projects/%d/jobs/%d/runs" % (pid, job["id"])).json()
    url = base + "/api/v1/projects/%d/jobs/%d/runs/%d" % (pid, job["id"], run["id"])
    deadline = time.time() + 120
    while "started" not in s.get(url + "/log").text:
        assert time.time() < deadline and s.get(url).json()["status"] in ("queued", "running"), \
            (s.get(url).json(), s.get(url + "/log").text)
        time.sleep(0.5)
    # rewritten in place, as a collaborator's editor or session would, to the same length:
    # bash reading the project's file would read the new third line
    with open(data / "projects" / str(pid) / "race.sh", "r+b") as f:
        f.write(b"echo started\nsleep 8\necho EVILEVIL\n")
    while s.get(url).json()["status"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.5)
    final, logtext = s.get(url).json(), s.get(url + "/log").text
    assert final["status"] == "succeeded", (final, logtext)
    assert logtext.splitlines()[-2:] == ["started", "original"], logtext


def test_standalone_runs_jobs_in_containers_on_swarm(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("needs root and dockerd (apt-get install docker.io; scripts/test.sh installs it)")
    data = tmp_path / "data"
    data.mkdir()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    (data / "images-cache").symlink_to(CACHE_DIR)  # share the test run's engine image cache
    port = free_port()
    sock = tmp_path / "run" / "docker.sock"
    env = env_for(tmp_path, CDSW_DOCKER_HOST="unix://" + str(sock))
    del env["CDSW_ORCHESTRATOR"]  # the default: swarm when Docker can run
    log = open(tmp_path / "standalone.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "cdsw_agent.cli.main", "standalone", "--data-dir",
                             str(data), "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    base = "http://127.0.0.1:%d" % port
    try:
        _wait(base + "/healthz", proc, 1200)
        out = (tmp_path / "standalone.log").read_text()
        assert "engines run in containers on Docker Swarm" in out, out
        password = out.split("password:")[1].split()[0]
        s = requests.Session()
        r = s.post(base + "/api/v1/auth/signin", json={"username": "admin", "password": password}, timeout=10)
        s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        images = s.get(base + "/api/v1/engine-images", timeout=10).json()
        assert [i["is_default"] for i in images] == [True]
        pid = s.post(base + "/api/v1/projects", json={"name": "demo", "template": "python"}).json()["id"]
        s.put(base + "/api/v1/projects/%d/files/content" % pid, json={
            "path": "who.py", "content": "import os\nprint('uid', os.getuid(), 'cwd', os.getcwd(),"
                                         " sorted(os.listdir('.')))\n"}).raise_for_status()
        job = s.post(base + "/api/v1/projects/%d/jobs" % pid, json={"name": "who", "script": "who.py"}).json()
        run = s.post(base + "/api/v1/projects/%d/jobs/%d/runs" % (pid, job["id"])).json()
        url = base + "/api/v1/projects/%d/jobs/%d/runs/%d" % (pid, job["id"], run["id"])
        deadline = time.time() + 120
        while s.get(url).json()["status"] in ("queued", "running") and time.time() < deadline:
            time.sleep(1)
        final = s.get(url).json()
        logtext = s.get(url + "/log").text
        assert final["status"] == "succeeded", (final, logtext)
        assert "uid 8536 cwd /home/cdsw" in logtext and "analysis.py" in logtext, logtext
        # the engine runs the bytes the master checked (jobs/script.py): bash reads its script
        # as it goes, and a rewrite of the project's file while it sleeps is not what it reads
        _rewritten_while_running(s, base, pid, data)
        # the template's analysis.py (display() of a DataFrame, a matplotlib plot) runs in the
        # engine's kernel; its table and image are kept with the run, its log stays text
        job = s.post(base + "/api/v1/projects/%d/jobs" % pid,
                     json={"name": "analysis", "script": "analysis.py"}).json()
        run = s.post(base + "/api/v1/projects/%d/jobs/%d/runs" % (pid, job["id"])).json()
        url = base + "/api/v1/projects/%d/jobs/%d/runs/%d" % (pid, job["id"], run["id"])
        deadline = time.time() + 180
        while s.get(url).json()["status"] in ("queued", "running") and time.time() < deadline:
            time.sleep(1)
        final, logtext = s.get(url).json(), s.get(url + "/log").text
        assert final["status"] == "succeeded", (final, logtext)
        assert "first rows:" in logtext and "<Figure size" in logtext and "<table" not in logtext
        outputs = s.get(url + "/outputs").json()
        assert [sorted(o["data"]) for o in outputs] == [
            ["text/html", "text/plain"], ["image/png", "text/plain"],
            ["application/vnd.plotly.v1+json"]], outputs  # plotly is in the image
        assert "sin" in outputs[0]["data"]["text/html"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, (tmp_path / "standalone.log").read_text()[-3000:]
    assert not sock.exists() or subprocess.run(
        ["docker", "-H", "unix://" + str(sock), "info"], capture_output=True).returncode != 0
