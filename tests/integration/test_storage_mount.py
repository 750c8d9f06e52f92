"""Project storage over a real sshd and a real sshfs mount (FUSE), on loopback.

The master side is the product's own SFTP-only sshd (own config, port, host key and account);
the worker side mounts the master's projects folder into another folder with sshfs and keeps it
mounted with the watchdog. Everything lives under /var/lib/cdsw-storage-test-*: sshd's chroot
needs root-owned, non-writable parents, which /tmp is not. Every test removes its mounts,
processes and the test account, also when it fails.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from cdsw_agent.storage import MountWatchdog, heartbeat_fields, mounts
from cdsw_agent.storage.config import StorageConfig, StorageError
from cdsw_agent.storage.sftp_server import CLIENT_KEY, SftpServer, worker_credentials
from cdsw_agent.storage.sshfs import SshfsStorage, sshfs_pids

from .netns import Lab, available, busybox_rootfs, import_busybox, start_docker_role

TOOLS = ("sshd", "sshfs", "ssh", "sftp", "ssh-keygen", "useradd", "userdel", "mountpoint")


def _missing_tools() -> List[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [t for t in TOOLS if not shutil.which(t, path=path)]


@pytest.fixture(scope="module", autouse=True)
def machine() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: sshd chroots the storage account and root mounts with allow_other")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: this machine cannot mount FUSE file systems")
    missing = _missing_tools()
    assert not missing, "missing %s: apt-get install openssh-server openssh-client sshfs fuse3" \
        % ", ".join(missing)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Cluster:
    """A master (sshd serving root/master/projects) and a worker mount (root/worker/projects)."""

    def __init__(self, root: Path):
        self.root = root
        self.account = "cdswst" + secrets.token_hex(3)
        self.master = StorageConfig(
            backend="local", role="master", projects_dir=root / "master" / "projects",
            state_dir=root / "master" / "storage", ssh_port=free_port(), ssh_user=self.account,
            ssh_listen="127.0.0.1", account_uid=None, serve_sftp=True)
        self.worker = StorageConfig(
            backend="sshfs", role="worker", projects_dir=root / "worker" / "projects",
            state_dir=root / "worker" / "storage", master_host="127.0.0.1", check_timeout=2,
            mount_timeout=20, hang_grace=3)
        self.server = SftpServer(self.master)
        self.storage = SshfsStorage(self.worker, fetch=lambda: worker_credentials(self.master))
        self.watchdogs: List[MountWatchdog] = []

    def start_master(self) -> None:
        self.master.projects_dir.mkdir(parents=True)
        self.server.start()
        uid = pwd.getpwnam(self.account).pw_uid
        project = self.master.projects_dir / "1"
        project.mkdir()
        os.chown(str(project), uid, uid)  # the master makes project folders the engines' own
        (project / "README.md").write_text("from the master\n")
        wait_until(lambda: port_open(self.master.ssh_port), 10, "the storage sshd to listen")

    def watchdog(self, interval: float = 0.3) -> MountWatchdog:
        w = MountWatchdog(self.storage, interval)
        self.watchdogs.append(w)
        return w

    @property
    def mount(self) -> Path:
        return self.worker.projects_dir

    def ssh(self, *argv: str, binary: str = "ssh") -> subprocess.CompletedProcess:
        """ssh/sftp as a worker would, with the worker's installed key and pinned host key."""
        ssh_dir = self.worker.ssh_dir
        opts = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "UserKnownHostsFile=%s" % (ssh_dir / "known_hosts"),
                "-o", "StrictHostKeyChecking=yes", "-i", str(ssh_dir / CLIENT_KEY)]
        port = ["-P" if binary == "sftp" else "-p", str(self.master.ssh_port)]
        return subprocess.run([binary] + opts + port + list(argv), capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    def close(self) -> None:
        for w in self.watchdogs:
            w.stop(release=True)
        for pid in sshfs_pids(self.mount):
            os.kill(pid, signal.SIGKILL)  # stopped (SIGSTOP) ones too
        mounts.detach(self.mount)
        self.server.stop()
        subprocess.run(["userdel", self.account], capture_output=True)
        for entry in mounts.parse_mountinfo(Path("/proc/self/mountinfo").read_text()):
            if entry.mount_point.startswith(str(self.root) + "/"):
                subprocess.run(["umount", "-l", entry.mount_point], capture_output=True)
        shutil.rmtree(str(self.root), ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = Path("/var/lib/cdsw-storage-test-" + secrets.token_hex(3))
    root.mkdir(mode=0o755)
    c = Cluster(root)
    try:
        c.start_master()
        yield c
    finally:
        c.close()
    assert not sshfs_pids(c.mount), "an sshfs process outlived the test"
    assert mounts.mount_entry(c.mount) is None


def test_worker_reads_and_writes_the_masters_project_files(cluster: Cluster) -> None:
    cluster.storage.ensure()
    assert cluster.storage.check() is None
    assert mounts.mount_entry(cluster.mount).fstype == "fuse.sshfs"  # type: ignore[union-attr]
    on_worker, on_master = cluster.mount / "1", cluster.master.projects_dir / "1"
    assert (on_worker / "README.md").read_text() == "from the master\n"
    (on_worker / "analysis.py").write_text("print(42)\n")
    (on_worker / "data").mkdir()
    (on_worker / "data" / "x.csv").write_text("a,b\n1,2\n")
    assert (on_master / "analysis.py").read_text() == "print(42)\n"
    assert (on_master / "data" / "x.csv").read_text() == "a,b\n1,2\n"
    # written from the worker = written by the storage account on the master
    assert (on_master / "analysis.py").stat().st_uid == pwd.getpwnam(cluster.account).pw_uid
    (on_worker / "analysis.py").rename(on_worker / "main.py")
    assert not (on_master / "analysis.py").exists() and (on_master / "main.py").exists()
    # the engine mount is the same path on either node
    mount = cluster.storage.engine_mount(1)
    assert (mount.source, mount.target) == (str(on_worker), "/home/cdsw")


def test_key_reaches_only_the_project_files_over_sftp(cluster: Cluster) -> None:
    cluster.storage.ensure()
    # the mount's root is the master's projects folder itself (chroot)
    assert sorted(os.listdir(str(cluster.mount))) == \
        sorted(os.listdir(str(cluster.master.projects_dir)))
    target = "%s@127.0.0.1" % cluster.account
    # a shell command: the session is forced to internal-sftp, which refuses to run commands
    marker = "marker-" + secrets.token_hex(4)
    r = cluster.ssh("-v", target, "id; echo " + marker)
    assert "Authenticated to 127.0.0.1" in r.stderr, r.stderr[-600:]  # the key itself works
    assert r.returncode != 0
    assert marker not in r.stdout and "uid=" not in r.stdout, r.stdout
    assert "allows sftp connections only" in r.stdout + r.stderr, r.stdout
    # forwarding a connection through the master is refused
    r = cluster.ssh("-W", "127.0.0.1:%d" % cluster.master.ssh_port, target)
    assert r.returncode != 0
    assert "prohibited" in r.stderr or "refused" in r.stderr or "failed" in r.stderr, r.stderr
    # nothing outside the projects folder: the system, or the master's keys next to it
    for path in ("/etc/passwd", "/../storage/ssh/" + CLIENT_KEY):
        batch = cluster.root / "batch"
        batch.write_text("get %s %s\n" % (path, cluster.root / "stolen"))
        r = cluster.ssh("-b", str(batch), target, binary="sftp")
        assert r.returncode != 0, r.stdout
        assert not (cluster.root / "stolen").exists()


@pytest.mark.parametrize("drop", ["kill sshfs", "fusermount -uz"])
def test_watchdog_remounts_a_dropped_mount(cluster: Cluster, drop: str) -> None:
    watchdog = cluster.watchdog().start()
    wait_until(lambda: watchdog.mounted, 20, "the first mount")
    first = sshfs_pids(cluster.mount)
    assert len(first) == 1
    if drop == "kill sshfs":
        os.kill(first[0], signal.SIGKILL)
    else:
        tool = mounts.fusermount() or "fusermount"
        subprocess.run([tool, "-u", "-z", str(cluster.mount)], check=True)
    wait_until(lambda: watchdog.remounts >= 1, 15, "the watchdog to remount")
    assert cluster.storage.check() is None
    assert (cluster.mount / "1" / "README.md").read_text() == "from the master\n"
    assert sshfs_pids(cluster.mount) and sshfs_pids(cluster.mount) != first
    state = heartbeat_fields({"checks": {"docker": "ok"}}, watchdog)
    assert state["checks"] == {"docker": "ok", "project_storage": "mounted"}
    assert state["storage"]["mounted"] is True and state["storage"]["last_error"] == ""


def test_watchdog_is_not_hung_by_a_hung_mount(cluster: Cluster) -> None:
    """A FUSE server that stops answering blocks whoever touches the mount; the checks run in
    child processes with a deadline. The watchdog gives it hang_grace to recover, then remounts."""
    watchdog = cluster.watchdog()
    assert watchdog.check_once()
    hung = sshfs_pids(cluster.mount)
    os.kill(hung[0], signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert "did not finish" in (cluster.storage.check() or "")
        assert time.monotonic() - started < 10
        assert not watchdog.check_once()  # within the grace period: reported, not remounted
        assert watchdog.remounts == 0 and "did not finish" in watchdog.last_error
        assert sshfs_pids(cluster.mount) == hung
        time.sleep(cluster.worker.hang_grace)
        assert watchdog.check_once(), watchdog.last_error
        assert watchdog.remounts == 1
        assert hung[0] not in sshfs_pids(cluster.mount)
        assert (cluster.mount / "1" / "README.md").read_text() == "from the master\n"
    finally:
        try:
            os.kill(hung[0], signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_watchdog_reports_an_unreachable_master_then_recovers(cluster: Cluster) -> None:
    watchdog = cluster.watchdog()
    assert watchdog.check_once()
    cluster.server.stop()
    for pid in sshfs_pids(cluster.mount):
        os.kill(pid, signal.SIGKILL)
    assert not watchdog.check_once()
    state = heartbeat_fields({"checks": {}}, watchdog)
    assert state["storage"]["mounted"] is False
    assert "mount of %s failed" % cluster.mount in state["storage"]["last_error"]
    assert state["checks"]["project_storage"].startswith("not mounted: ")
    assert mounts.mount_entry(cluster.mount) is None  # no half-made mount left behind
    cluster.server = SftpServer(cluster.master).start()
    wait_until(lambda: port_open(cluster.master.ssh_port), 10, "the storage sshd to listen again")
    assert watchdog.check_once(), watchdog.last_error
    assert watchdog.state()["last_error"] == ""


def test_wrong_host_key_is_refused(cluster: Cluster) -> None:
    """The master's host key is pinned: a different server at the same address is not trusted."""
    cluster.storage.ensure()
    cluster.storage.release()
    known = cluster.worker.ssh_dir / "known_hosts"
    other = cluster.root / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    name, _ = known.read_text().split(" ", 1)
    cluster.storage.fetch = None  # use what is installed, now with another host key
    other_key = " ".join(Path(str(other) + ".pub").read_text().split()[:2])
    known.write_text("%s %s\n" % (name, other_key))
    with pytest.raises(Exception) as e:
        cluster.storage.remount()
    assert "failed" in str(e.value)
    assert mounts.mount_entry(cluster.mount) is None


# --- two hosts: a master and a worker in their own network namespaces (netns.py) ----------

MASTER_SCRIPT = r"""
import json, os, signal, sys, threading
from pathlib import Path
from cdsw_agent.storage.config import StorageConfig, StorageError
from cdsw_agent.storage.sftp_server import SftpServer, worker_credentials
a = json.loads(sys.argv[1])
cfg = StorageConfig(backend="local", role="master", projects_dir=Path(a["projects"]),
                    state_dir=Path(a["state"]), ssh_user=a["user"], ssh_port=a["port"],
                    ssh_listen=a["listen"], account_uid=None, serve_sftp=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
server = SftpServer(cfg).start()
fd = os.open(a["answer"] + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:  # stands in for POST /api/v1/cluster/storage
    json.dump(worker_credentials(cfg), f)
os.replace(a["answer"] + ".tmp", a["answer"])
stop.wait()
server.stop()
"""

WORKER_SCRIPT = r"""
import json, logging, signal, sys, time
from pathlib import Path
from cdsw_agent.storage.config import StorageConfig, StorageError
from cdsw_agent.storage.sshfs import SshfsStorage
from cdsw_agent.storage.watchdog import MountWatchdog
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
a = json.loads(sys.argv[1])
cfg = StorageConfig(backend="sshfs", role="worker", projects_dir=Path(a["projects"]),
                    state_dir=Path(a["state"]), master_host=a["master"], check_timeout=2,
                    hang_grace=a["grace"])
answer = Path(a["answer"])
watchdog = MountWatchdog(SshfsStorage(cfg, lambda: json.loads(answer.read_text())), 0.3).start()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
out = Path(a["out"])
try:
    while True:
        out.with_suffix(".tmp").write_text(json.dumps(watchdog.state()))
        out.with_suffix(".tmp").replace(out)
        time.sleep(0.2)
finally:
    watchdog.stop(release=True)
"""


def test_two_hosts_mount_survives_a_network_blip_and_a_dead_sshfs() -> None:
    reason = available()
    if reason:
        pytest.skip(reason)
    account = "cdswst" + secrets.token_hex(3)
    with Lab(Path("/var/lib/cdsw-lab") / secrets.token_hex(3)) as lab:
        try:
            h1, h2 = lab.add_host("h1"), lab.add_host("h2")
            projects, mount = h1.root / "data" / "projects", h2.root / "data" / "projects"
            projects.mkdir(parents=True)
            answer, out = h1.root / "answer.json", h2.root / "state.json"
            master = h1.popen([sys.executable, "-c", MASTER_SCRIPT, json.dumps(dict(
                projects=str(projects), state=str(h1.root / "data" / "storage"), user=account,
                port=2222, listen=h1.address, answer=str(answer)))], log_name="master.log")
            wait_until(lambda: answer.exists() or master.poll() is not None, 20, "the master")
            assert answer.exists(), h1.log("master.log")[-800:]
            uid = pwd.getpwnam(account).pw_uid
            (projects / "1").mkdir()
            os.chown(str(projects / "1"), uid, uid)
            (projects / "1" / "README.md").write_text("from h1\n")

            def state() -> dict:
                try:
                    return json.loads(out.read_text())
                except (OSError, ValueError):
                    return {}

            worker = h2.popen([sys.executable, "-c", WORKER_SCRIPT, json.dumps(dict(
                projects=str(mount), state=str(h2.root / "data" / "storage"), master=h1.address,
                answer=str(answer), out=str(out), grace=60))], log_name="worker.log")
            wait_until(lambda: state().get("mounted"), 30, "h2 to mount h1's projects")
            assert (mount / "1" / "README.md").read_text() == "from h1\n"
            (mount / "1" / "from-h2.txt").write_text("hello h1\n")
            assert (projects / "1" / "from-h2.txt").read_text() == "hello h1\n"
            assert "Accepted publickey for %s from %s " % (account, h2.address) in \
                (h1.root / "data" / "storage" / "sshd" / "sshd.log").read_text()

            # an engine on h2 (a container of h2's own dockerd) sees the project at /home/cdsw
            _, docker2 = start_docker_role(h2, str(Path(sys.executable).with_name("cdsw")))
            image = import_busybox(docker2, busybox_rootfs(h2.root / "busybox.tar"))
            bind = SshfsStorage(StorageConfig(backend="sshfs", role="worker", projects_dir=mount,
                                              state_dir=h2.root)).engine_mount(1)
            output = docker2.containers.run(
                image, ["sh", "-c", "cat README.md; echo from the engine > engine.txt"],
                working_dir=bind.target, user="%d:%d" % (uid, uid), remove=True,
                volumes={bind.source: {"bind": bind.target, "mode": "rw"}})
            assert output == b"from h1\n"
            assert (projects / "1" / "engine.txt").read_text() == "from the engine\n"
            assert (projects / "1" / "engine.txt").stat().st_uid == uid

            # h2's link goes down: the mount stops answering, but sshfs still runs, so the
            # watchdog reports it and waits instead of cutting off running engines
            inside = ["ip", "netns", "exec", h2.netns, "ip", "link", "set", "eth0"]
            subprocess.run(inside + ["down"], check=True)
            try:
                wait_until(lambda: state().get("mounted") is False, 20, "the hang to be noticed")
                assert "did not finish" in state()["last_error"]
            finally:
                subprocess.run(inside + ["up"], check=True)
            wait_until(lambda: state().get("mounted"), 30, "the mount to recover by itself")
            assert state()["remounts"] == 0
            assert (mount / "1" / "README.md").read_text() == "from h1\n"

            # sshfs dies: remounted at once
            for pid in sshfs_pids(mount):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: state().get("remounts") == 1 and state().get("mounted"), 30,
                       "h2 to remount (log: %s)" % h2.log("worker.log")[-500:])
            assert (mount / "1" / "from-h2.txt").read_text() == "hello h1\n"

            worker.send_signal(signal.SIGTERM)  # the worker leaves: unmounted, sshfs gone
            worker.wait(30)
            assert mounts.mount_entry(mount) is None and not sshfs_pids(mount)
            assert "remounted" in h2.log("worker.log")
        finally:
            lab.close()
            subprocess.run(["userdel", account], capture_output=True)


def test_a_taken_port_stops_the_server_with_one_clear_line(cluster: Cluster) -> None:
    other = SftpServer(cluster.master.with_(state_dir=cluster.root / "other-storage"))
    with pytest.raises(StorageError, match="port %d on 127.0.0.1 is already in use; stop what "
                       "uses it or set storage_ssh_port" % cluster.master.ssh_port):
        other.start()
    assert not other.running()
