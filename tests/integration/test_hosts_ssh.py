"""`cdsw hosts add|list|remove` over a real sshd, on network-namespace hosts (netns.py).

h1 runs CDSW_DOCKER and CDSW_MASTER (as test_several_clusters.py starts them); p1 runs only
an sshd (its own host key and config, root login with one test key). From h1, `cdsw hosts add
p1 --cluster PROD` checks p1's host key, probes it, copies a wheelhouse of this checkout and
installs the agent in a virtualenv of p1's python3, writes its settings (0600) and starts
CDSW_DOCKER and CDSW_WORKER there; the test asserts p1's node joined h1's swarm labelled
cdsw.cluster=PROD, `hosts list` shows it, a second `add` changes nothing, and `hosts remove`
takes it out.

All namespaces share one file system and the lab has no systemd: the prefix and the unit
directory live in the lab's own directory and the roles run with `--services background`.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import requests

from cdsw_agent.hosts import wheels
from cdsw_agent.roles.docker import cgroup_parent
from cdsw_agent.settings import load_settings

from .netns import Lab, available, docker_env, start_docker_role, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
CDSW = str(Path(sys.executable).with_name("cdsw"))
SECRET = "hosts-ssh-" + os.urandom(8).hex()
PORT = 18561
SSH_PORT = 2022
SSHD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # root's, under sshd


def remote_python_version() -> str:
    py = shutil.which("python3", path=SSHD_PATH)
    if not py:
        pytest.skip("no python3 on sshd's PATH")
    return subprocess.run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def build_wheelhouse(pyver: str) -> Path:
    """This checkout's agent and its dependencies for pyver, as `cdsw hosts add` builds them
    when given no wheelhouse; built here first, outside the lab's namespaces, so that its
    downloads into build/cache need no route from them."""
    return wheels.build_from_checkout(REPO, pyver)


class HostsLab:
    def __init__(self, lab: Lab, wheelhouse: Path):
        self.lab, self.wheels = lab, wheelhouse
        self.h1 = lab.add_host("h1")
        self.p1 = lab.add_host("p1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
        (lab.root / "empty.conf").write_text("")
        (lab.root / "empty.properties").write_text("")
        env.update(CDSW_CONF=str(lab.root / "empty.conf"),
                   CDSW_PROPERTIES=str(lab.root / "empty.properties"),
                   CDSW_ORCHESTRATOR="swarm", CDSW_CLUSTER_SECRET=SECRET,
                   CDSW_HTTP_PORT=str(PORT), CDSW_STORAGE_BACKEND="local",
                   CDSW_ARGON2_TIME_COST="1", CDSW_ARGON2_MEMORY_KIB="1024",
                   CDSW_CLUSTER_CLIENT_KIND="none", CDSW_WORKER_HEARTBEAT_SECONDS="2",
                   CDSW_MASTER_HOST=self.h1.address, CDSW_BIND_ADDRESS=self.h1.address,
                   **docker_env(self.h1))
        self.master_env = env
        self.client_key = lab.root / "client_key"
        self.known_hosts = lab.root / "known_hosts"
        self.prefix = self.p1.root / "opt-cdsw"
        self.unit_dir = self.p1.root / "units"
        # p1's own settings: its Docker under its lab directory, like docker_env(p1)
        self.p1_env = docker_env(self.p1)
        lab.__dict__.setdefault("cgroup_parents", []).append(
            cgroup_parent(load_settings(environ=self.p1_env)))

    def start_master(self) -> None:
        start_docker_role(self.h1, CDSW)
        proc = self.h1.popen([CDSW, "role", "master", "start"], env=self.master_env,
                             log_name="master.log")

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError("master exited: %s" % self.h1.log("master.log")[-1500:])
            return requests.get("http://%s:%d/healthz" % (self.h1.address, PORT),
                                timeout=2).status_code == 200
        wait_for(up, 90, "the master API")

    def start_sshd(self) -> None:
        root = self.p1.root
        key = root / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)],
                       check=True)
        authorized = root / "authorized_keys"
        shutil.copyfile(str(self.client_key) + ".pub", authorized)
        config = root / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress %s" % self.p1.address, "Port %d" % SSH_PORT, "HostKey %s" % key,
            "PidFile %s" % (root / "sshd.pid"), "AuthorizedKeysFile %s" % authorized,
            "StrictModes no", "PermitRootLogin prohibit-password", "AllowUsers root",
            "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "LogLevel VERBOSE", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.p1.popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], log_name="sshd.log")
        self.host_key_pub = (root / "ssh_host_ed25519_key.pub").read_text()

        def listening() -> bool:
            r = self.h1.run(["ssh-keyscan", "-T", "2", "-p", str(SSH_PORT), self.p1.address])
            return r.returncode == 0 and "ssh-ed25519" in r.stdout
        wait_for(listening, 30, "p1's sshd")

    def cli(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.h1.wrap([CDSW] + list(argv)), text=True, capture_output=True,
                              env=dict(os.environ, **self.master_env), stdin=subprocess.DEVNULL,
                              timeout=600)

    def ssh_args(self) -> list:
        return ["--ssh-port", str(SSH_PORT), "--identity", str(self.client_key),
                "--known-hosts", str(self.known_hosts), "--prefix", str(self.prefix),
                "--unit-dir", str(self.unit_dir)]

    def add(self, *extra: str, wheelhouse: bool = True) -> subprocess.CompletedProcess:
        sets = []
        for key, value in self.p1_env.items():
            sets += ["--set", "%s=%s" % (key[len("CDSW_"):].lower(), value)]
        return self.cli("hosts", "add", self.p1.address, *self.ssh_args(),
                        "--services", "background",
                        *(["--wheelhouse", str(self.wheels)] if wheelhouse else []),
                        "--timeout", "180", *sets, *extra)

    def swarm_nodes(self) -> Dict[str, Any]:
        import docker

        client = docker.DockerClient(base_url=self.master_env["CDSW_DOCKER_HOST"], timeout=30)
        try:
            return {n["Description"]["Hostname"]: n for n in client.api.nodes()}
        finally:
            client.close()


@pytest.fixture(scope="module")
def hosts_lab(tmp_path_factory: Any) -> Iterator[HostsLab]:
    reason = available()
    if reason:
        pytest.skip(reason)
    for tool in ("/usr/sbin/sshd", "ssh", "ssh-keyscan", "ssh-keygen"):
        if not shutil.which(tool):
            pytest.skip("%s not found (apt-get install openssh-server openssh-client)" % tool)
    wheelhouse = build_wheelhouse(remote_python_version())
    with Lab(Path("/var/lib/cdsw-lab") / ("hosts-" + os.urandom(3).hex())) as lab:
        hl = HostsLab(lab, wheelhouse)
        try:
            hl.start_master()
            r = hl.cli("clusters", "add", "PROD", "--kind", "prod", "--open")
            assert r.returncode == 0, r.stderr
            hl.start_sshd()
            yield hl
        finally:
            print("--- h1 master.log (tail)\n%s" % hl.h1.log("master.log")[-2000:])
            print("--- p1 sshd.log (tail)\n%s" % hl.p1.log("sshd.log")[-1500:])
            for role in ("docker", "worker"):
                log = hl.prefix / "log" / ("%s.log" % role)
                if log.exists():
                    print("--- p1 %s.log (tail)\n%s" % (role, log.read_text()[-2000:]))


def test_unregistered_cluster_is_refused_before_the_remote(hosts_lab: HostsLab) -> None:
    r = hosts_lab.add("--cluster", "NOPE", "--accept-new-host-key")
    assert r.returncode != 0
    assert "no cluster named NOPE" in r.stderr
    assert not hosts_lab.prefix.exists()
    assert not hosts_lab.known_hosts.exists()  # not even the host key was taken


def test_unknown_host_key_is_refused(hosts_lab: HostsLab) -> None:
    r = hosts_lab.add("--cluster", "PROD")
    assert r.returncode != 0
    assert "not in %s" % hosts_lab.known_hosts in r.stderr and "--accept-new-host-key" in r.stderr
    fp = subprocess.run(["ssh-keygen", "-lf", str(hosts_lab.p1.root / "ssh_host_ed25519_key.pub")],
                        capture_output=True, text=True, check=True).stdout.split()[1]
    assert fp in r.stderr  # the key offered, to compare before accepting it
    assert not hosts_lab.known_hosts.exists() or \
        hosts_lab.host_key_pub.split()[1] not in hosts_lab.known_hosts.read_text()
    assert not hosts_lab.prefix.exists()


def command_lines_with_secret() -> list:
    """The command lines holding the cluster secret, of every process (all lab namespaces
    share this pid namespace)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path("/proc", pid, "cmdline").read_bytes()
            except OSError:
                continue
            if SECRET.encode() in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def watch_command_lines(stop: threading.Event, seen: list) -> None:
    while not stop.is_set():
        seen += command_lines_with_secret()
        stop.wait(0.05)


def test_add_joins_the_swarm_with_its_cluster_label(hosts_lab: HostsLab) -> None:
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    watcher = threading.Thread(target=watch_command_lines, args=(stop, seen), daemon=True)
    watcher.start()
    try:
        r = hosts_lab.add("--cluster", "PROD", "--accept-new-host-key")
    finally:
        stop.set()
        watcher.join(10)
    assert not seen, seen[:3]
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert SECRET not in out
    # the fingerprint printed is that of p1's own host key, now in known_hosts
    fp = subprocess.run(["ssh-keygen", "-lf", str(hosts_lab.p1.root / "ssh_host_ed25519_key.pub")],
                        capture_output=True, text=True, check=True).stdout.split()[1]
    assert fp in out
    assert hosts_lab.host_key_pub.split()[1] in hosts_lab.known_hosts.read_text()
    for step in range(1, 7):
        assert "[%d/6]" % step in out
    node = hosts_lab.swarm_nodes()["p1"]
    assert node["Status"]["State"] == "ready"
    assert node["Spec"]["Labels"].get("cdsw.cluster") == "PROD"
    props = hosts_lab.prefix / "etc" / "cdsw.properties"
    assert stat.S_IMODE(props.stat().st_mode) == 0o600
    text = props.read_text()
    assert "cdsw.cluster.secret=%s" % SECRET in text and "cdsw.workbench.cluster=PROD" in text
    # the secret is on no command line of the processes left running either
    assert not command_lines_with_secret()

    listed = hosts_lab.cli("hosts", "list")
    assert listed.returncode == 0, listed.stderr
    line = [ln for ln in listed.stdout.splitlines() if ln.startswith("p1 ")]
    assert line and "PROD" in line[0] and "ready" in line[0] and "active" in line[0], listed.stdout
    master_line = [ln for ln in listed.stdout.splitlines() if ln.startswith("h1 ")]
    assert master_line and "master" in master_line[0]

    # a second add, with the wheelhouse it builds from this checkout itself: the same wheels,
    # so nothing reinstalled, the same node, still labelled
    again = hosts_lab.add("--cluster", "PROD", wheelhouse=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "building a wheelhouse for Python" in again.stdout, again.stdout
    assert "already installed" in again.stdout and "roles already running" in again.stdout
    nodes = hosts_lab.swarm_nodes()
    assert nodes["p1"]["ID"] == node["ID"] and nodes["p1"]["Status"]["State"] == "ready"


def test_remove_takes_the_host_out(hosts_lab: HostsLab) -> None:
    pid_file = hosts_lab.prefix / "run" / "worker.pid"
    assert "p1" in hosts_lab.swarm_nodes() and pid_file.exists(), \
        "p1 was not added (see test_add_joins_the_swarm_with_its_cluster_label)"
    pid = int(pid_file.read_text())
    r = hosts_lab.cli("hosts", "remove", hosts_lab.p1.address, *hosts_lab.ssh_args())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "p1" not in hosts_lab.swarm_nodes()
    assert not pid_file.exists() and not (hosts_lab.prefix / "etc" / "cdsw.properties").exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path("/proc/%d" % pid).exists():
        time.sleep(0.2)
    assert not Path("/proc/%d" % pid).exists()
    assert "p1" not in hosts_lab.cli("hosts", "list").stdout


def test_a_failed_add_leaves_nothing_started(hosts_lab: HostsLab) -> None:
    """A host without the dockerd asked for is refused after the probe, before anything is
    written; a Docker role that exits at once (dockerd_path=/bin/false): the add fails with one
    line, and what it started is stopped again (no pid files, no settings file with the secret,
    no swarm node)."""
    r = hosts_lab.add("--cluster", "PROD", "--accept-new-host-key", "--set",
                      "dockerd_path=/nonexistent/dockerd")
    assert r.returncode != 0
    assert "/nonexistent/dockerd is not installed there" in r.stderr, r.stdout + r.stderr
    assert "[3/6]" not in r.stdout
    assert not (hosts_lab.prefix / "etc" / "cdsw.properties").exists()

    r = hosts_lab.add("--cluster", "PROD", "--accept-new-host-key", "--set",
                      "dockerd_path=/bin/false", "--timeout", "30")
    print(r.stdout, r.stderr)
    assert r.returncode != 0
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("cdsw: error:")]
    assert len(errors) == 1, r.stdout + r.stderr
    assert "stopping what this run started" in r.stderr
    assert SECRET not in r.stdout + r.stderr
    run = hosts_lab.prefix / "run"
    assert not list(run.glob("*.pid")) if run.exists() else True
    assert not (hosts_lab.prefix / "etc" / "cdsw.properties").exists()
    assert "p1" not in hosts_lab.swarm_nodes()


def test_an_unreachable_host_is_taken_out_without_ssh(hosts_lab: HostsLab) -> None:
    """p1 added again, then gone for good (its sshd and its roles killed, nothing left to
    answer): `hosts remove --unreachable` takes its node out of the swarm without SSH."""
    r = hosts_lab.add("--cluster", "PROD")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "p1" in hosts_lab.swarm_nodes()
    for name in ("sshd.pid", "opt-cdsw/run/worker.pid", "opt-cdsw/run/docker.pid"):
        pid = int((hosts_lab.p1.root / name).read_text())
        os.kill(pid, signal.SIGKILL if name != "opt-cdsw/run/docker.pid" else signal.SIGTERM)
    r = hosts_lab.cli("hosts", "remove", hosts_lab.p1.address, *hosts_lab.ssh_args())
    assert r.returncode != 0  # over SSH: nobody answers
    r = hosts_lab.cli("hosts", "remove", hosts_lab.p1.address, "--unreachable")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "without --unreachable" in r.stdout
    assert "p1" not in hosts_lab.swarm_nodes()
