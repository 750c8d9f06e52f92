"""Several "hosts" on one machine for multi-host tests (docs/architecture.md; the README's fresh-machine notes).

Each host is a network namespace joined to a private bridge by a veth pair, and runs its
processes in a fresh UTS namespace with its own host name (swarm nodes are told apart by host
name). Processes enter the network namespace with `nsenter --net=`, never `ip netns exec`, which
remounts /sys and breaks dockerd's cgroup detection.

`Lab` is a context manager; its close() removes everything it made, also after a failure:
processes (and containers left behind by a killed dockerd, found by cgroup parent), mounts under
the hosts' directories, namespaces, the bridge and the iptables rule.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

CGROUP_ROOT = Path("/sys/fs/cgroup")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


def available() -> Optional[str]:
    """None when this machine can build namespaced hosts, else why not (a skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables", "nsenter", "unshare", "dockerd"):
        if not shutil.which(tool):
            return "%s not found (apt-get install iproute2 iptables util-linux docker.io)" % tool
    probe = "cdswprobe%d" % os.getpid()
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return "cannot create a network namespace: %s" % r.stderr.strip()
    sh("ip", "netns", "delete", probe, check=False)
    return None


class Host:
    def __init__(self, lab: "Lab", name: str, index: int):
        self.lab, self.name = lab, name
        self.netns = "%s-%s" % (lab.id, name)
        self.address = "%s.%d" % (lab.prefix, 10 + index)
        self.root = lab.root / name  # everything on disk for this host
        self.processes: List[subprocess.Popen] = []

    def wrap(self, argv: Sequence[str]) -> List[str]:
        """argv run in this host's network namespace, under its own host name."""
        script = 'hostname "$1" && ns="$2" && shift 2 && exec nsenter --net="/var/run/netns/$ns" -- "$@"'
        return ["unshare", "--uts", "sh", "-c", script, "sh", self.name, self.netns] + list(argv)

    def popen(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None,
              log_name: Optional[str] = None) -> subprocess.Popen:
        self.root.mkdir(parents=True, exist_ok=True)
        out = open(self.root / (log_name or "process.log"), "ab")
        proc = subprocess.Popen(self.wrap(argv), env=dict(os.environ, **(env or {})),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        self.processes.append(proc)
        return proc

    def run(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.wrap(argv), env=dict(os.environ, **(env or {})),
                              capture_output=True, text=True, timeout=timeout)

    def log(self, log_name: str) -> str:
        try:
            return (self.root / log_name).read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Lab:
    """A private bridge with hosts on 10.X.Y.0/24; use as `with Lab() as lab:`."""

    def __init__(self, root: Path, subnet_prefix: Optional[str] = None):
        self.id = "cd" + secrets.token_hex(3)  # short: interface names have 15 characters
        self.root = Path(root)
        self.prefix = subnet_prefix or self._free_prefix()
        self.bridge = self.id + "br"
        self.hosts: List[Host] = []
        self._rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        self._made_bridge = False

    @staticmethod
    def _free_prefix() -> str:
        """A 10.231.X.0/24 no route on this machine uses yet (labs may run side by side)."""
        routes = sh("ip", "-4", "route", "show", "table", "all", check=False).stdout
        for _ in range(100):
            prefix = "10.231.%d" % (secrets.randbelow(230) + 20)
            if prefix + "." not in routes:
                return prefix
        raise RuntimeError("no free 10.231.X.0/24 subnet for a test lab")

    def __enter__(self) -> "Lab":
        try:
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            self._made_bridge = True
            sh("ip", "addr", "add", self.prefix + ".1/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
            # Docker's FORWARD policy is DROP and bridged frames pass iptables (br_netfilter)
            sh("iptables", "-I", *self._rule)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, name: str) -> Host:
        host = Host(self, name, len(self.hosts) + 1)
        self.hosts.append(host)
        veth = "%s%dh" % (self.id, len(self.hosts))
        peer = "%s%dc" % (self.id, len(self.hosts))
        sh("ip", "netns", "add", host.netns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", host.netns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        inside = ["ip", "netns", "exec", host.netns]  # fine for `ip` itself
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "link", "set", peer, "name", "eth0")
        sh(*inside, "ip", "addr", "add", host.address + "/24", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        sh(*inside, "ip", "route", "add", "default", "via", self.prefix + ".1")
        host.root.mkdir(parents=True, exist_ok=True)
        return host

    # --- cleanup
    def _cgroup_pids(self, parents: Sequence[str]) -> List[int]:
        pids = set()
        for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ():
            for parent in parents:
                base = hierarchy / parent.strip("/")
                if not base.is_dir():
                    continue
                for procs in base.rglob("cgroup.procs"):
                    try:
                        pids.update(int(p) for p in procs.read_text().split())
                    except (OSError, ValueError):
                        pass
        return sorted(pids)

    def _netns_pids(self) -> List[int]:
        inodes = set()
        for host in self.hosts:
            try:
                inodes.add(os.stat("/var/run/netns/" + host.netns).st_ino)
            except OSError:
                pass
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if os.stat(entry / "ns" / "net").st_ino in inodes:
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids

    def _remove_cgroups(self, parents: Sequence[str]) -> None:
        for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ():
            for parent in parents:
                base = hierarchy / parent.strip("/")
                if base.is_dir():
                    for d in sorted((p for p in base.rglob("*") if p.is_dir()),
                                    key=lambda p: len(p.parts), reverse=True) + [base]:
                        try:
                            d.rmdir()
                        except OSError:
                            pass

    def close(self, cgroup_parents: Sequence[str] = ()) -> None:
        parents = list(cgroup_parents) + getattr(self, "cgroup_parents", [])
        for host in self.hosts:  # politely first: dockerd cleans up its own containers
            for proc in host.processes:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
        deadline = time.monotonic() + 20
        for host in self.hosts:
            for proc in host.processes:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        # containers (by cgroup parent), then whatever still runs in a host's network
        # namespace (containerd shims outlive a killed dockerd and would keep it alive)
        strays = self._cgroup_pids(parents) + self._netns_pids()
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2 if strays else 0)
        self._remove_cgroups(parents)
        self._unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        for host in self.hosts:
            sh("ip", "netns", "delete", host.netns, check=False)
        if self._made_bridge:
            sh("iptables", "-D", *self._rule, check=False)
            sh("ip", "link", "delete", self.bridge, check=False)
            self._made_bridge = False
        self.hosts = []

    @staticmethod
    def _unmount_under(root: Path) -> None:
        prefix = str(root.resolve()) + "/"
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            sh("umount", "-l", target, check=False)


# --- a tiny image without a registry: busybox-static as the whole root file system
BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "echo", "cat", "sleep", "head", "tr", "ls", "true", "false", "env",
                   "hostname", "id", "pwd", "dd", "wc")


def busybox_rootfs(path: Path) -> Path:
    """A tar of /bin/busybox (Debian busybox-static) plus applet links, for `docker import`."""
    import io
    import tarfile

    if not BUSYBOX.exists():
        raise FileNotFoundError("%s missing; apt-get install busybox-static" % BUSYBOX)
    if "statically linked" not in sh("file", "-L", str(BUSYBOX), check=False).stdout and \
            shutil.which("file"):
        raise FileNotFoundError("%s is not static; apt-get install busybox-static" % BUSYBOX)
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), "bin/busybox")
        for applet in BUSYBOX_APPLETS:
            info = tarfile.TarInfo("bin/" + applet)
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return path


def import_busybox(client, tarball: Path, repository: str = "cdsw-test/busybox",  # type: ignore[no-untyped-def]
                   tag: str = "1") -> str:
    """Import the busybox root file system into a daemon; returns the image reference."""
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)
    return "%s:%s" % (repository, tag)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; returns its value or fails saying what never happened."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the thing waited for may fail until it is up
            last_error = e
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s%s" % (
        timeout, what, " (last error: %s)" % last_error if last_error else ""))


def docker_env(host: Host) -> Dict[str, str]:
    """CDSW settings (as environment) of a CDSW_DOCKER role on this host."""
    return {"CDSW_DOCKER_HOST": "unix://%s/run/docker.sock" % host.root,
            "CDSW_DOCKER_DATA_ROOT": str(host.root / "docker"),
            "CDSW_DATA_DIR": str(host.root / "data")}


def start_docker_role(host: Host, cdsw: str, timeout: float = 90):  # type: ignore[no-untyped-def]
    """`cdsw role start docker` on the host; returns (process, docker client) once it answers."""
    import docker

    from cdsw_agent.roles.docker import cgroup_parent
    from cdsw_agent.settings import load_settings

    env = docker_env(host)
    parents = host.lab.__dict__.setdefault("cgroup_parents", [])
    parents.append(cgroup_parent(load_settings(environ=env)))
    proc = host.popen([cdsw, "role", "docker", "start"], env=env, log_name="docker-role.log")

    def up():  # type: ignore[no-untyped-def]
        if proc.poll() is not None:
            raise AssertionError("docker role on %s exited %s: %s" % (
                host.name, proc.returncode, host.log("docker-role.log")[-800:]))
        client = docker.DockerClient(base_url=env["CDSW_DOCKER_HOST"], timeout=120)
        client.ping()
        return client

    deadline = time.monotonic() + timeout
    while True:
        try:
            return proc, up()
        except AssertionError:
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise AssertionError("docker role on %s does not answer after %.0fs: %s"
                                     % (host.name, timeout, host.log("docker-role.log")[-800:]))
            time.sleep(0.5)
