"""CDSW_DOCKER: config rendering, pre-flight, and dockerd run by the role in a namespaced host."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from cdsw_agent.orchestrators.swarm import bridge_isolated
from cdsw_agent.roles import docker as role
from cdsw_agent.settings import load_settings

from .netns import (
    Lab,
    available,
    busybox_rootfs,
    docker_env,
    import_busybox,
    start_docker_role,
    wait_for,
)

pytestmark = pytest.mark.docker

CDSW = str(Path(sys.executable).with_name("cdsw"))


def settings_for(tmp_path: Path, **overrides):
    env = {"CDSW_DOCKER_HOST": "unix://%s/run/docker.sock" % tmp_path,
           "CDSW_DOCKER_DATA_ROOT": str(tmp_path / "docker"),
           "CDSW_DATA_DIR": str(tmp_path / "data")}
    return load_settings(environ=env, overrides=overrides or None)


def test_daemon_config_has_socket_dirs_and_own_cgroup_parent(tmp_path):
    s = settings_for(tmp_path, docker_storage_driver="vfs", docker_registries="reg.example:5000")
    config = json.loads(role.daemon_config(s))
    assert config["hosts"] == ["unix://%s/run/docker.sock" % tmp_path]
    assert config["exec-root"] == str(tmp_path / "run" / "exec")
    assert config["pidfile"] == str(tmp_path / "run" / "dockerd.pid")
    assert config["data-root"] == str(tmp_path / "docker")
    assert config["storage-driver"] == "vfs"
    assert config["insecure-registries"] == ["reg.example:5000"]
    assert config["log-opts"]["max-file"] == "3"
    assert config["icc"] is False  # containers on the default bridge cannot talk to each other
    other = settings_for(tmp_path / "other")
    assert config["cgroup-parent"] != json.loads(role.daemon_config(other))["cgroup-parent"]
    assert role.cgroup_parent(load_settings(environ={})) == "/cdsw"


def test_dockerd_prefers_local_images_only_without_a_registry(tmp_path):
    assert role.dockerd_env(settings_for(tmp_path))["DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"] == "1"
    with_registry = settings_for(tmp_path, engine_registry="registry.example:5000")
    assert "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE" not in role.dockerd_env(with_registry)


def test_prepare_passes_on_this_host_and_creates_directories(tmp_path):
    s = settings_for(tmp_path)
    assert role.prepare(s) == []
    assert (tmp_path / "run").is_dir() and (tmp_path / "docker").is_dir()


@pytest.mark.parametrize("overrides, expected", [
    ({"dockerd_path": "/nonexistent/dockerd"}, "dockerd (/nonexistent/dockerd) not found"),
    ({"docker_host": "tcp://127.0.0.1:2375"}, "is not a unix:// socket"),
    ({"docker_use_system": "true"}, "docker_use_system is set but no Docker answers"),
])
def test_prepare_reports_each_problem_on_one_line(tmp_path, overrides, expected):
    problems = role.prepare(settings_for(tmp_path, **overrides))
    assert len(problems) == 1 and expected in problems[0]
    assert "\n" not in problems[0]


def test_start_refuses_with_the_problems(tmp_path):
    from cdsw_agent.errors import UserError

    with pytest.raises(UserError, match="not found"):
        role.start(settings_for(tmp_path, dockerd_path="/nonexistent/dockerd"))


@pytest.fixture(scope="module")
def lab():
    reason = available()
    if reason:
        pytest.skip(reason)
    with Lab(Path("/var/lib/cdsw-lab") / os.urandom(3).hex()) as lab:
        yield lab


def test_role_runs_dockerd_until_sigterm(lab, tmp_path):
    host = lab.add_host("d1")
    env = docker_env(host)
    # a pid file naming a live process that is not dockerd (left by a crash, pid reused)
    (host.root / "run").mkdir(parents=True)
    (host.root / "run" / "dockerd.pid").write_text(str(os.getpid()))
    proc, client = start_docker_role(host, CDSW)
    assert host.run([CDSW, "role", "docker", "status"], env=env).returncode == 0
    info = client.info()
    assert info["DockerRootDir"] == str(host.root / "docker")
    assert info["CgroupDriver"] == "cgroupfs"
    image = import_busybox(client, busybox_rootfs(tmp_path / "busybox.tar"))
    out = client.containers.run(image, ["sh", "-c", "echo from $(hostname -s 2>/dev/null "
                                                    "|| echo container)"], remove=True)
    assert out.startswith(b"from ")
    # the attack: a container connects to another's address on the default bridge, where swarm
    # engines run (orchestrators/swarm.py); icc is off, so only the listener's own connection works
    assert bridge_isolated(client)
    # in a loop: a one-shot `nc -l` ends with its first connection, and its container with it,
    # which killed the probe's exec before it could print (a flaky empty answer)
    listener = client.containers.run(image, ["sh", "-c", "while :; do busybox nc -l -p 8000; done"],
                                     detach=True)
    try:
        address = client.containers.get(listener.id).attrs["NetworkSettings"]["IPAddress"]
        probe = ["sh", "-c", "echo hi | busybox nc -w 3 %s 8000 && echo reached || echo refused" % address]
        # first the listener reaches itself (so it listens), then another container cannot
        wait_for(lambda: listener.exec_run(probe).output.strip() == b"reached", 20,
                 "the listener to answer its own connection")
        assert client.containers.run(image, probe, remove=True).strip() == b"refused"
    finally:
        listener.remove(force=True)
    # a second daemon on the same socket is refused before it starts
    again = host.run([CDSW, "role", "docker", "prepare"], env=env)
    assert again.returncode != 0 and "already answers" in again.stderr

    # the system-Docker mode only watches that socket, until SIGTERM
    watcher = host.popen([CDSW, "role", "docker", "start"],
                         env=dict(env, CDSW_DOCKER_USE_SYSTEM="true"), log_name="watch.log")
    wait_for(lambda: "answers" in host.log("watch.log"), 20, "the watcher to report")
    assert watcher.poll() is None
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(20) == 0

    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    client.close()
    assert host.run([CDSW, "role", "docker", "status"], env=env).returncode == 3
    assert "Daemon shutdown complete" in host.log("docker-role.log")
