"""Cloudera Manager agent emulation on fresh Debian gateway hosts (contract test of issue 5).

Two containers, gw1 and gw2, play two gateway hosts of a cluster. Their image is a fresh Debian
bookworm root file system (debootstrap minbase + python3, python3-venv, docker.io, iptables:
gateway_host.py), so nothing of the development environment is inside. The test then does what
the CM agent does for the CDSW service:

- distribute and activate the parcel: the built `CDSW-<v>-el9.parcel` is copied into
  /opt/cloudera/parcel-cache, checked against its `.sha1`, unpacked into /opt/cloudera/parcels
  and linked as `CDSW` (setActiveSymlink). The el9 payload is used because it carries wheels
  for Python 3.11, bookworm's python3; the jammy payload carries 3.10 only and its launcher
  refuses bookworm with one line (asserted below). The payload is manylinux2014 wheels plus a
  POSIX launcher, so nothing else differs between the distributions;
- lay out one process dir per role under /var/run/cloudera-scm-agent/process: `cdsw.properties`
  rendered by helpers.cm_render_properties from the built jar's `descriptor/service.sdl`
  configWriter (its includedParams, defaults and configNames) for the parameter values of the
  test, the jar's scripts/ and aux/, and for the master the client-config dirs of the optional
  HDFS/HIVE dependencies (hadoop-conf, hive-conf);
- start each role as the agent's CSD wrapper does: cwd = CONF_DIR, output to logs/stdout.log
  and logs/stderr.log, the defines scripts of SCM_DEFINES_SCRIPTS sourced with their
  PARCEL_DIRNAME (CM's `source_parcel_environment`), then `exec bash scripts/control.sh start
  ROLE` in the foreground. The role's process is the process the test started (exec all the
  way), it is stopped with SIGTERM as supervisord does, and must exit 0.

Roles: CDSW_DOCKER on both hosts (dockerd inside the container, started by the role), then
CDSW_MASTER on gw1 (swarm orchestrator: its dockerd becomes the swarm manager) and CDSW_WORKER
on gw2, which asks the master for a join token over the cluster API with the cluster secret and
joins the swarm; a worker with a wrong secret is refused. The master answers /healthz.

Boundaries: no CM server, agent or supervisord (this test plays them; the properties writer
does not escape Java-properties specials, our values have none). `docker run --privileged`
fails on this machine, so the containers get only SYS_ADMIN and NET_ADMIN with seccomp and
AppArmor unconfined; that is enough for dockerd (storage driver vfs, cgroups read-only) to start,
serve the API and run swarm membership, but not to run engine containers, so no engine is
started here (tests/integration/test_three_hosts.py runs engines on three real dockerds).
Project storage is `local` (sshfs needs /dev/fuse; tests/integration/test_storage_mount.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import tarfile
import time
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import pytest

from tests.integration.docker_fixtures import CACHE_DIR, docker_engine  # noqa: F401

from .gateway_host import gateway_image
from .helpers import cm_render_properties

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

PARCELS_ROOT = "/opt/cloudera/parcels"
PARCEL_CACHE = "/opt/cloudera/parcel-cache"
PROCESS_ROOT = "/var/run/cloudera-scm-agent/process"
CSD_WRAPPER = "/usr/lib/cmf/service/csd/csd.sh"
DOCKER_HOST = "unix:///var/run/cdsw/docker.sock"  # the CDSW_DOCKER role's socket (default)
# What the CM agent's wrapper does before a CSD program: source every active parcel's defines
# script with its PARCEL_DIRNAME, then exec the runner in CONF_DIR with the output in logs/.
CSD_WRAPPER_TEXT = """#!/bin/bash
cd "$CONF_DIR" || exit 1
exec >>"$CONF_DIR/logs/stdout.log" 2>>"$CONF_DIR/logs/stderr.log"
IFS=: read -r -a scripts <<<"$SCM_DEFINES_SCRIPTS"
IFS=: read -r -a dirnames <<<"$PARCEL_DIRNAMES"
for i in "${!scripts[@]}"; do
  PARCEL_DIRNAME="${dirnames[$i]}"
  . "${scripts[$i]}"
done
unset PARCEL_DIRNAME
exec bash "$CONF_DIR/$1" "${@:2}"
"""
SECRET = "cm-emulation-" + uuid.uuid4().hex
HTTP_PORT = 8080
START_TIMEOUT = 240.0  # the first role on a host builds the agent's virtualenv from the parcel


def service_values(**overrides: Any) -> Dict[str, Any]:
    """The service's parameter values as an admin would set them in CM."""
    values: Dict[str, Any] = {
        "cdsw_domain": "cdsw.example.test", "cdsw_master_host": "gw1",
        "cdsw_cluster_secret": SECRET, "cdsw_docker_storage_driver": "vfs",
        "cdsw_storage_backend": "local", "cdsw_http_port": HTTP_PORT,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class Role:
    host: "Host"
    role_type: str
    conf_dir: str
    exec_id: str
    pid: int  # in this machine's pid namespace: the agent's supervisord sends its signals there

    def inspect(self) -> Dict[str, Any]:
        return self.host.client.api.exec_inspect(self.exec_id)

    def running(self) -> bool:
        return bool(self.inspect()["Running"])

    def log(self, name: str = "stderr.log") -> str:
        return self.host.sh("cat %s/logs/%s 2>/dev/null || true" % (self.conf_dir, name)).output

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.inspect()
            if not state["Running"]:
                return int(state["ExitCode"])
            time.sleep(0.5)
        raise AssertionError("%s on %s still runs after %.0fs:\n%s"
                             % (self.role_type, self.host.name, timeout, self.log()[-3000:]))

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM, as supervisord stops a role; returns the exit status."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
        return self.wait_exit(timeout)


@dataclass
class ShellResult:
    exit_code: int
    output: str


@dataclass
class Host:
    client: Any  # docker.DockerClient of the test dockerd
    container: Any
    name: str
    parcel_dirname: str  # CDSW-<version>, the active parcel
    roles: List[Role] = field(default_factory=list)
    _next_id: int = 100

    def sh(self, script: str) -> ShellResult:
        code, out = self.container.exec_run(["bash", "-c", script], demux=False)
        return ShellResult(code, (out or b"").decode("utf-8", "replace"))

    def check(self, script: str) -> str:
        r = self.sh(script)
        assert r.exit_code == 0, "on %s: %s\n%s" % (self.name, script, r.output[-2000:])
        return r.output

    def put_files(self, dest: str, files: Dict[str, bytes], modes: Optional[Dict[str, int]] = None
                  ) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), (modes or {}).get(name, 0o644)
                tar.addfile(info, io.BytesIO(data))
        self.check("mkdir -p %s" % dest)
        assert self.container.put_archive(dest, buf.getvalue())

    @property
    def ip(self) -> str:
        self.container.reload()
        return next(iter(self.container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]

    def process_dir(self, csd: Dict[str, Any], role_type: str, values: Dict[str, Any],
                    client_confs: Sequence[str] = ()) -> str:
        """A new CM process dir for role_type, as the agent unpacks it from the heartbeat."""
        self._next_id += 1
        conf_dir = "%s/%d-cdsw-%s" % (PROCESS_ROOT, self._next_id, role_type)
        files = {"cdsw.properties": cm_render_properties(csd["sdl"], role_type, values).encode()}
        modes: Dict[str, int] = {}
        for rel, data in csd["files"].items():
            if rel.startswith(("scripts/", "aux/")):
                files[rel] = data
                modes[rel] = 0o755 if rel.startswith("scripts/") else 0o644
        for conf in client_confs:  # what CM writes for HDFS (core-site.xml), HIVE, ...
            files["%s/%s-site.xml" % (conf, conf.split("-")[0].replace("hadoop", "core"))] = \
                b"<configuration/>\n"
        files["logs/.keep"] = b""
        self.put_files(conf_dir, files, modes)
        return conf_dir

    def start_role(self, csd: Dict[str, Any], role_type: str, action: str, values: Dict[str, Any],
                   client_confs: Sequence[str] = (), args: Sequence[str] = (),
                   extra_env: Optional[Dict[str, str]] = None) -> Role:
        conf_dir = self.process_dir(csd, role_type, values, client_confs)
        env = {"CONF_DIR": conf_dir, "PARCELS_ROOT": PARCELS_ROOT,
               "PARCEL_DIRNAMES": self.parcel_dirname,
               "SCM_DEFINES_SCRIPTS": "%s/%s/meta/cdsw_env.sh" % (PARCELS_ROOT,
                                                                  self.parcel_dirname),
               "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "LANG": "C.UTF-8"}
        env.update(extra_env or {})  # a command runner's environmentVariables
        runner = ["bash", CSD_WRAPPER, "scripts/control.sh", action] + list(args)
        # supervisord runs the role as the SDL's runAs (the role's own, else the service's)
        user = declared_user(csd["sdl"], role_type)
        exec_id = self.client.api.exec_create(self.container.id, runner, environment=env,
                                              workdir=conf_dir, user=user)["Id"]
        self.client.api.exec_start(exec_id, detach=True)
        pid = 0
        for _ in range(100):
            pid = int(self.client.api.exec_inspect(exec_id).get("Pid") or 0)
            if pid:
                break
            time.sleep(0.05)
        role = Role(self, role_type, conf_dir, exec_id, pid)
        self.roles.append(role)
        return role


def declared_user(sdl: Dict[str, Any], role_type: str) -> str:
    role = next(r for r in sdl["roles"] if r["name"] == role_type)
    run_as = role.get("runAs") or sdl["runAs"]
    return "%s:%s" % (run_as["user"], run_as["group"])


@pytest.fixture(scope="module")
def csd(dist: Path, version: str) -> Dict[str, Any]:
    with zipfile.ZipFile(dist / ("CDSW-%s.jar" % version)) as zf:
        files = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
    return {"files": files, "sdl": json.loads(files["descriptor/service.sdl"])}


@pytest.fixture(scope="module")
def gateway(docker_engine: Any) -> str:  # noqa: F811
    from cdsw_agent.images.progress import Progress

    lines: List[str] = []
    try:
        return gateway_image(docker_engine.client, CACHE_DIR, Progress(lines.append))
    except Exception as e:
        pytest.fail("gateway image: %s\n%s" % (e, "\n".join(lines[-20:])), pytrace=False)


@pytest.fixture(scope="module")
def hosts(docker_engine: Any, gateway: str, dist: Path, version: str  # noqa: F811
          ) -> Iterator[Dict[str, Host]]:
    """gw1 and gw2 on their own network, each with the CDSW parcel distributed and activated."""
    dirname = "CDSW-%s" % version
    client = docker_engine.client
    label = "cdsw-test.cm-emulation=%s" % uuid.uuid4().hex[:8]
    network = client.networks.create("cdsw-cm-%s" % label[-8:], driver="bridge",
                                     labels={"cdsw-test.cm-emulation": label[-8:]})
    made: Dict[str, Host] = {}
    try:
        for name in ("gw1", "gw2"):
            container = client.containers.run(
                gateway, name="cdsw-cm-%s-%s" % (name, label[-8:]), hostname=name, detach=True,
                network=network.name, labels={"cdsw-test.cm-emulation": label[-8:]},
                cap_add=["SYS_ADMIN", "NET_ADMIN"],
                security_opt=["seccomp=unconfined", "apparmor=unconfined"])
            network.disconnect(container)
            network.connect(container, aliases=[name])
            made[name] = Host(client, container, name, dirname)
        parcel = dist / ("%s-el9.parcel" % dirname)
        sha1 = (dist / (parcel.name + ".sha1")).read_text().split()[0]
        data = parcel.read_bytes()
        assert hashlib.sha1(data).hexdigest() == sha1
        for host in made.values():
            host.put_files(PARCEL_CACHE, {parcel.name: data, parcel.name + ".sha": sha1.encode()})
            host.put_files(os.path.dirname(CSD_WRAPPER),
                           {os.path.basename(CSD_WRAPPER): CSD_WRAPPER_TEXT.encode()},
                           {os.path.basename(CSD_WRAPPER): 0o755})
            # distribute (hash checked, unpacked), then activate (setActiveSymlink)
            host.check("set -e; cd %(cache)s; echo \"$(cat %(p)s.sha)  %(p)s\" | sha1sum -c "
                       "--quiet; mkdir -p %(root)s; tar -xzf %(p)s -C %(root)s; "
                       "ln -sfn %(dir)s %(root)s/CDSW"
                       % {"cache": PARCEL_CACHE, "p": parcel.name, "root": PARCELS_ROOT,
                          "dir": dirname})
        yield made
    finally:
        for host in made.values():
            for role in reversed(host.roles):
                if role.running():
                    os.kill(role.pid, signal.SIGKILL)
            host.container.remove(force=True)
        network.remove()


def wait_http(url: str, role: Role, timeout: float = START_TIMEOUT) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert role.running(), "%s exited:\n%s" % (role.role_type, role.log()[-3000:])
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.status
        except OSError:
            time.sleep(1.0)
    raise AssertionError("%s did not answer %s in %.0fs:\n%s"
                         % (role.role_type, url, timeout, role.log()[-3000:]))


def docker_on(host: Host, args: str) -> str:
    return host.check("docker -H %s %s" % (DOCKER_HOST, args))


def wait_docker(host: Host, role: Role) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert role.running(), "CDSW_DOCKER on %s exited:\n%s" % (host.name, role.log()[-3000:])
        if host.sh("docker -H %s info >/dev/null 2>&1" % DOCKER_HOST).exit_code == 0:
            return
        time.sleep(1.0)
    raise AssertionError("dockerd of CDSW_DOCKER on %s did not answer:\n%s"
                         % (host.name, role.log()[-3000:]))


def wait_node(manager: Host, line: str, timeout: float, role: Optional[Role] = None) -> bool:
    """True once the swarm manager's `docker node ls` shows "HOSTNAME STATUS AVAILABILITY"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (role is None or role.running()):
        nodes = docker_on(manager, "node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}'")
        if line in nodes.splitlines():
            return True
        time.sleep(1.0)
    return False


def wait_ready(role: Role, timeout: float = START_TIMEOUT) -> None:
    """control.sh reports START only once the role answers `cdsw role NAME status`."""
    deadline = time.monotonic() + timeout
    name = role.role_type.split("_", 1)[1].lower()
    while time.monotonic() < deadline:
        if "control.sh: CDSW %s is ready after " % name in role.log():
            return
        assert role.running(), "%s exited:\n%s" % (role.role_type, role.log()[-3000:])
        time.sleep(0.5)
    raise AssertionError("%s never reported ready:\n%s" % (role.role_type, role.log()[-3000:]))


def children_comms(pid: int) -> List[str]:
    """Command names of pid's direct children (this machine's pid namespace)."""
    return [comm for _, comm in children(pid)]


def children(pid: int) -> List[Any]:
    """(pid, command name) of pid's direct children (this machine's pid namespace)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat.rsplit(")", 1)
            if int(rest.split()[1]) == pid:
                out.append((int(entry.name), comm.split("(", 1)[1]))
    return out


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_the_jammy_payload_refuses_bookworm_python(hosts: Dict[str, Host], dist: Path,
                                                   version: str) -> None:
    """Which payload fits a Debian bookworm gateway: jammy has wheels for 3.10 only."""
    gw1 = hosts["gw1"]
    parcel = dist / ("CDSW-%s-jammy.parcel" % version)
    gw1.put_files("/tmp/jammy", {parcel.name: parcel.read_bytes()})
    r = gw1.sh("cd /tmp/jammy && tar -xzf %s CDSW-%s/bin/cdsw && CDSW-%s/bin/cdsw --version"
               % (parcel.name, version, version))
    assert r.exit_code == 1
    assert last_line(r.output) == (
        "cdsw launcher: error: no supported Python found: install one of python3.10 (with its "
        "venv module) or set CDSW_PYTHON; on Ubuntu 22.04: apt-get install python3 python3-venv")


def test_roles_start_join_and_stop_like_under_the_cm_agent(hosts: Dict[str, Host],
                                                           csd: Dict[str, Any]) -> None:
    gw1, gw2 = hosts["gw1"], hosts["gw2"]
    payload = "%s/%s" % (PARCELS_ROOT, gw1.parcel_dirname)
    listing = "find %s -printf '%%p %%s %%m %%T@\\n' | sort | sha1sum" % payload
    parcel_before = gw1.check(listing)
    values = service_values()
    docker1 = gw1.start_role(csd, "CDSW_DOCKER", "start", values, args=["docker"])
    docker2 = gw2.start_role(csd, "CDSW_DOCKER", "start", values, args=["docker"])
    for host, role in ((gw1, docker1), (gw2, docker2)):
        wait_docker(host, role)
        wait_ready(role)
        # control.sh stays in the foreground and the role (dockerd itself) is its child
        assert "dockerd" in children_comms(role.pid)

    master = gw1.start_role(csd, "CDSW_MASTER", "start", values,
                            client_confs=("hadoop-conf", "hive-conf"), args=["master"])
    assert wait_http("http://%s:%d/healthz" % (gw1.ip, HTTP_PORT), master) == 200
    wait_ready(master)
    # the agent is control.sh's child (the one that is not a tee of its output)
    agent_pid = next(pid for pid, comm in children(master.pid) if comm != "tee")
    environ = Path("/proc/%d/environ" % agent_pid).read_bytes().split(b"\0")
    assert ("CDSW_HADOOP_CONF_DIRS=%s/hadoop-conf,%s/hive-conf"
            % (master.conf_dir, master.conf_dir)).encode() in environ
    assert "Swarm: active" in docker_on(gw1, "info")

    # a worker with another secret is refused by the master and stops with one line
    intruder = gw2.start_role(csd, "CDSW_WORKER", "start",
                              service_values(cdsw_cluster_secret="not-" + SECRET), args=["worker"])
    assert intruder.wait_exit(START_TIMEOUT) == 1
    assert last_line(intruder.log()).startswith(
        "control.sh: error: CDSW worker exited (status 1) before it was ready: "), \
        intruder.log()[-2000:]
    assert last_line(intruder.log()).endswith(
        "the master rejected this worker's cluster secret; set the same cdsw.cluster.secret on "
        "every host"), intruder.log()[-2000:]
    # START means running: a worker that dies at once (an empty secret) fails START with its
    # last line, it is not reported started
    dying = gw2.start_role(csd, "CDSW_WORKER", "start", service_values(cdsw_cluster_secret=""),
                           args=["worker"])
    assert dying.wait_exit(START_TIMEOUT) != 0
    assert "ready after" not in dying.log()
    assert last_line(dying.log()).startswith(
        "control.sh: error: CDSW worker exited (status "), dying.log()[-2000:]
    assert "cluster_secret is empty" in last_line(dying.log()), dying.log()[-2000:]

    worker = gw2.start_role(csd, "CDSW_WORKER", "start", values, args=["worker"])
    assert wait_node(gw1, "gw2 Ready Active", START_TIMEOUT, worker), worker.log()[-3000:]
    wait_ready(worker)
    assert "join token handed to gw2" in master.log()
    assert SECRET not in master.log() + worker.log() + master.log("stdout.log")

    # SIGTERM stops each role cleanly; the worker first drains itself through the master
    assert worker.stop() == 0, worker.log()[-3000:]
    assert "left the swarm" in worker.log()
    assert wait_node(gw1, "gw2 Down Drain", 60), "the master does not see gw2 drained and gone"
    assert master.stop() == 0, master.log()[-3000:]
    # the launcher built the agent's virtualenv outside the parcel, which stays as distributed
    gw1.check("test -f /var/lib/cdsw/venvs/venv-%s-py3.11/.cdsw-complete"
              % gw1.parcel_dirname.split("-", 1)[1])
    assert gw1.check(listing) == parcel_before
    assert "CDSW master stopped" in master.log()
    for role in (docker1, docker2):
        assert role.stop() == 0, role.log()[-3000:]


def test_a_value_the_sdl_forbids_fails_at_start(hosts: Dict[str, Host],
                                                csd: Dict[str, Any]) -> None:
    """cdsw_orchestrator is a string_enum; a value outside it (a safety valve can write one)
    stops the role at start with the agent's one line, exit 2."""
    gw1 = hosts["gw1"]
    role = gw1.start_role(csd, "CDSW_MASTER", "start", service_values(cdsw_orchestrator="mesos"),
                          args=["master"])
    assert role.wait_exit(START_TIMEOUT) == 2
    assert last_line(role.log()) == (
        "control.sh: error: CDSW master exited (status 2) before it was ready: "
        "cdsw: configuration error: cdsw.orchestrator in %s/cdsw.properties:%d: invalid value "
        "'mesos': expected one of swarm, local"
        % (role.conf_dir, _line_of(gw1, role.conf_dir, "cdsw.orchestrator=")))


def test_a_missing_required_parameter_fails_at_start(hosts: Dict[str, Host],
                                                     csd: Dict[str, Any]) -> None:
    gw2 = hosts["gw2"]
    role = gw2.start_role(csd, "CDSW_WORKER", "start", service_values(cdsw_domain=None),
                          args=["worker"])
    assert role.wait_exit(60) == 1
    assert last_line(role.log()) == ("control.sh: error: cdsw.domain is not set: set the CDSW "
                                      "service parameter cdsw_domain (cdsw.domain) and restart")


def previous_build_parcel(out: Path, cache_dir: Path, agent_sources: Path, epoch: int,
                          number: int) -> Path:
    """Build N: the el9 parcel of these sources with the previous build number (what the
    previous commit's build was called); one parcel only, from the cached wheelhouse."""
    import build_packages
    import pkgcommon
    import wheelhouse

    ver = "%s.%d" % (pkgcommon.base_version(agent_sources), number)
    agent = wheelhouse.build_agent_wheel(agent_sources, cache_dir, epoch, ver=ver)
    pythons = build_packages.DISTROS["el9"]
    by_python = wheelhouse.collect(agent, set(pythons), cache_dir)
    return build_packages.build_parcel(out, ver, "el9", pythons,
                                       wheelhouse.union(by_python, pythons), epoch, {})


def test_upgrade_from_the_previous_build_keeps_everything(
        hosts: Dict[str, Host], csd: Dict[str, Any], version: str, build_number: int,
        cache_dir: Path, agent_sources: Path, epoch: int, tmp_path: Path) -> None:
    """N -> N+1 as CM does it: N's parcel active and its master serving a project with a file,
    a job and an API key; Back Up Database; the N+1 parcel distributed and activated; the master
    restarted from it; the database migrated by the new master after its own backup; everything
    still there and the API key still accepted."""
    import requests

    gw1 = hosts["gw1"]
    parcel_n = previous_build_parcel(tmp_path, cache_dir, agent_sources, epoch,
                                     build_number - 1)
    dir_n = parcel_n.name.rsplit("-", 1)[0]
    dir_n1 = "CDSW-%s" % version
    import pkgcommon
    assert pkgcommon.parse_version(dir_n.split("-", 1)[1]) < pkgcommon.parse_version(version)
    gw1.put_files(PARCEL_CACHE, {parcel_n.name: parcel_n.read_bytes()})
    gw1.check("set -e; tar -xzf %s/%s -C %s; ln -sfn %s %s/CDSW"
              % (PARCEL_CACHE, parcel_n.name, PARCELS_ROOT, dir_n, PARCELS_ROOT))
    port = 8090
    values = service_values(cdsw_orchestrator="local", cdsw_http_port=port,
                            cdsw_data_dir="/var/lib/cdsw-upgrade", cdsw_domain=gw1.ip)
    base = "http://%s:%d" % (gw1.ip, port)

    gw1.parcel_dirname = dir_n
    master = gw1.start_role(csd, "CDSW_MASTER", "start", values, args=["master"])
    wait_ready(master)
    assert requests.get(base + "/healthz", timeout=10).json()["version"] == dir_n.split("-", 1)[1]
    admin = gw1.start_role(csd, "CDSW_MASTER", "create-admin", values, args=["master"],
                           extra_env={"CDSW_FIRST_ADMIN_USER": "alice",
                                      "CDSW_FIRST_ADMIN_PASSWORD": "upgrade-Pass-4321!"})
    assert admin.wait_exit(120) == 0, admin.log()[-2000:]
    s = requests.Session()
    r = s.post(base + "/api/v1/auth/signin", json={"username": "alice",
                                                   "password": "upgrade-Pass-4321!"}, timeout=30)
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    project = s.post(base + "/api/v1/projects", json={"name": "kept", "template": "python"},
                     timeout=30).json()
    pid = project["id"]
    r = s.put(base + "/api/v1/projects/%d/files/content" % pid,
              json={"path": "analysis.py", "content": "print('kept across upgrades')\n"},
              timeout=30)
    assert r.status_code in (200, 201), r.text
    job = s.post(base + "/api/v1/projects/%d/jobs" % pid,
                 json={"name": "nightly", "script": "analysis.py"}, timeout=30).json()
    key = s.post(base + "/api/v1/account/api-keys", json={"name": "ci"}, timeout=30).json()["key"]

    # Back Up Database (CdswBackupDb), then distribute + activate N+1 and restart the master
    backup = gw1.start_role(csd, "CDSW_MASTER", "backup-db", values, args=["master"])
    assert backup.wait_exit(120) == 0, backup.log()[-2000:]
    assert gw1.check("ls /var/lib/cdsw-upgrade/backups").split(), "no backup written"
    gw1.check("ln -sfn %s %s/CDSW" % (dir_n1, PARCELS_ROOT))
    assert master.stop() == 0, master.log()[-2000:]
    gw1.parcel_dirname = dir_n1
    upgraded = gw1.start_role(csd, "CDSW_MASTER", "start", values, args=["master"])
    wait_ready(upgraded)
    assert requests.get(base + "/healthz", timeout=10).json()["version"] == version
    bearer = {"Authorization": "Bearer " + key}
    got = requests.get(base + "/api/v1/projects/%d" % pid, headers=bearer, timeout=30)
    assert got.status_code == 200 and got.json()["name"] == "kept", got.text
    content = requests.get(base + "/api/v1/projects/%d/files/content" % pid,
                           params={"path": "analysis.py"}, headers=bearer, timeout=30).json()
    assert content["content"] == "print('kept across upgrades')\n"
    jobs = requests.get(base + "/api/v1/projects/%d/jobs" % pid, headers=bearer, timeout=30)
    assert [j["id"] for j in jobs.json()] == [job["id"]]
    assert upgraded.stop() == 0, upgraded.log()[-2000:]


def _line_of(host: Host, conf_dir: str, prefix: str) -> int:
    text = host.check("cat %s/cdsw.properties" % conf_dir)
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(prefix))
