"""CDSW_DOCKER: the Docker daemon of a gateway host, run in the foreground.

`start` renders daemon.json (socket, data root, exec root, cgroup parent, storage driver, log
rotation, registries) into the role's run directory, the directory of the socket in
settings.docker_host, and execs dockerd, so the cluster manager supervises dockerd itself.
With docker_use_system it only watches the system daemon's socket until SIGTERM.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import docker
from docker.errors import DockerException

from ..errors import UserError
from ..logs import setup_logging
from ..render import render
from ..settings import Settings
from . import engine_firewall

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/run/cdsw/docker.sock"
MIN_FREE_BYTES = 5 << 30  # engine images alone take a few GiB
WATCH_SECONDS = 10.0


def socket_path(settings: Settings) -> Path:
    url = settings.docker_host
    if not url.startswith("unix://"):
        raise UserError("docker_host %s is not a unix:// socket; the CDSW_DOCKER role serves a "
                        "local socket such as unix://%s" % (url, DEFAULT_SOCKET))
    return Path(url[len("unix://"):])


def run_dir(settings: Settings) -> Path:
    return socket_path(settings).parent


def cgroup_parent(settings: Settings) -> str:
    """One cgroup parent per daemon, so the containers of several daemons on one machine (test
    hosts in network namespaces) never mix and each set can be found and cleaned up."""
    sock = str(socket_path(settings))
    if sock == DEFAULT_SOCKET:
        return "/cdsw"
    return "/cdsw-" + hashlib.sha1(sock.encode()).hexdigest()[:8]


def daemon_config(settings: Settings, storage_driver: Optional[str] = None) -> str:
    rd = run_dir(settings)
    return render("daemon.json.j2", settings, hosts=[settings.docker_host],
                  exec_root=str(rd / "exec"), pidfile=str(rd / "dockerd.pid"),
                  cgroup_parent=cgroup_parent(settings),
                  storage_driver=storage_driver or choose_storage_driver(settings)[0])


def dockerd_env(settings: Settings) -> Dict[str, str]:
    env = dict(os.environ)
    if not settings.engine_registry:
        # Images reach the nodes without a registry (docker import / streamed by the workers):
        # swarm tasks must use the local image instead of trying (and timing out) to pull it.
        env["DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"] = "1"
    return env


def answers(url: str, timeout: int = 5) -> bool:
    try:
        client = docker.DockerClient(base_url=url, timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (DockerException, OSError):
        return False


# --- pre-flight checks, each returns a problem line or None
def _check_dirs(settings: Settings) -> Optional[str]:
    for d in (run_dir(settings), Path(settings.docker_data_root)):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return "cannot create %s: %s" % (d, e.strerror or e)
    return None


def _check_cgroups() -> Optional[str]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # cgroup v2
        return None
    if all((root / c).is_dir() for c in ("memory", "cpu", "devices")):  # cgroup v1
        return None
    return ("cgroups are not mounted under /sys/fs/cgroup (need v2, or v1 memory, cpu and devices "
            "controllers); mount them or boot with systemd")


OVERLAY_UNSAFE_FS = ("overlay", "aufs", "ecryptfs")  # overlay2 cannot use them as its upper dir


def _overlay_in_kernel() -> bool:
    fs_list = Path("/proc/filesystems")
    filesystems = fs_list.read_text() if fs_list.exists() else ""
    modules = Path("/lib/modules/%s" % os.uname().release)
    return "overlay" in filesystems or any(modules.glob("kernel/fs/overlayfs/overlay.ko*"))


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str, mountinfo: Optional[str] = None) -> str:
    """Type of the file system holding path (its nearest existing ancestor): the fstype of the
    longest mount point in /proc/self/mountinfo that contains it; "" when unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    target = os.path.realpath(str(p))
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return ""
    best, fstype = "", ""
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        fields = pre.split()
        if not sep or len(fields) < 5 or not post.split():
            continue
        mount = _unescape_mount(fields[4])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):  # later mounts over the same point win
            best, fstype = mount, post.split()[0]
    return fstype


def choose_storage_driver(settings: Settings) -> Tuple[str, str]:
    """(driver, why): the configured one, or with "auto" overlay2 where the data root's file
    system can hold it, else fuse-overlayfs when installed, else vfs (slow, always works)."""
    configured = settings.docker_storage_driver
    if configured != "auto":
        return configured, "set by docker_storage_driver"
    root = settings.docker_data_root
    fstype = filesystem_type(root)
    if not _overlay_in_kernel():
        problem = "the kernel has no overlay file system"
    elif fstype in OVERLAY_UNSAFE_FS:
        problem = "the data root %s is on %s, which overlay2 cannot stack on" % (root, fstype)
    else:
        return "overlay2", "the data root %s is on %s" % (root, fstype or "an unknown file system")
    if shutil.which("fuse-overlayfs") and os.path.exists("/dev/fuse"):
        return "fuse-overlayfs", problem + "; fuse-overlayfs is installed"
    return "vfs", problem + " and fuse-overlayfs is not installed (apt-get install fuse-overlayfs)"


def _check_storage(driver: str) -> Optional[str]:
    if driver == "overlay2" and not _overlay_in_kernel():
        return ("the overlay kernel module is missing for storage driver overlay2; run `modprobe "
                "overlay` or set cdsw.docker.storage.driver to auto or vfs")
    if driver == "fuse-overlayfs" and not shutil.which("fuse-overlayfs"):
        return ("fuse-overlayfs is not installed for storage driver fuse-overlayfs; run `apt-get "
                "install fuse-overlayfs` or set cdsw.docker.storage.driver to auto")
    return None


def _check_free_disk(settings: Settings) -> Optional[str]:
    path = Path(settings.docker_data_root)
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        return ("only %.1f GiB free for Docker's data root %s; need at least %d GiB"
                % (free / (1 << 30), settings.docker_data_root, MIN_FREE_BYTES >> 30))
    return None


def prepare(settings: Settings) -> List[str]:
    """Host pre-flight for the Docker role: one line per problem, empty when ready."""
    try:
        sock = socket_path(settings)
    except UserError as e:
        return [str(e)]
    if settings.docker_use_system:
        return [] if answers(settings.docker_host) else \
            ["docker_use_system is set but no Docker answers on %s; start it (systemctl start "
             "docker) or unset docker_use_system" % settings.docker_host]
    problems = [p for p in (
        None if shutil.which(settings.dockerd_path) else
        "dockerd (%s) not found; install Docker (docker-ce or docker.io) or set "
        "cdsw.dockerd.path" % settings.dockerd_path,
        None if shutil.which("iptables") else
        "iptables not found; install it (dockerd needs it for container networking)",
        _check_dirs(settings), _check_cgroups(), _check_storage(choose_storage_driver(settings)[0]),
    ) if p]
    if not problems:
        disk = _check_free_disk(settings)
        problems += [disk] if disk else []
    if sock.exists() and answers(settings.docker_host):
        problems.append("a Docker daemon already answers on %s; stop it, or set "
                        "docker_use_system to use it" % settings.docker_host)
    return problems


def write_config(settings: Settings) -> Path:
    rd = run_dir(settings)
    (rd / "exec").mkdir(parents=True, exist_ok=True)
    driver, why = choose_storage_driver(settings)
    log.info("storage driver %s: %s", driver, why)
    path = rd / "daemon.json"
    tmp = rd / ".daemon.json.tmp"
    tmp.write_text(daemon_config(settings, driver))
    os.replace(tmp, path)
    return path


def watch_system_docker(settings: Settings, stop: threading.Event) -> None:
    """Report the system daemon's health until stop is set; the manager sees our logs."""
    healthy: Optional[bool] = None
    while not stop.is_set():
        ok = answers(settings.docker_host)
        if ok != healthy:
            (log.info if ok else log.error)("system Docker %s on %s", "answers" if ok else
                                            "does not answer", settings.docker_host)
            healthy = ok
        stop.wait(WATCH_SECONDS)


def remove_stale_files(settings: Settings) -> None:
    """Socket and pid file a crashed dockerd left (prepare checked that no daemon answers).
    dockerd refuses to start while its pid file names a live process, whatever it is."""
    sock, pidfile = socket_path(settings), run_dir(settings) / "dockerd.pid"
    if sock.exists():
        sock.unlink()
    try:
        pid = int(pidfile.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        pid = 0
    if pid:
        try:
            comm = Path("/proc/%d/comm" % pid).read_text().strip()
        except OSError:
            comm = ""
        if comm == "dockerd":
            raise UserError("dockerd (pid %d) from %s still runs but does not answer on %s; "
                            "stop it first" % (pid, pidfile, settings.docker_host))
    if pidfile.exists():
        pidfile.unlink()


def start(settings: Settings) -> None:
    """Exec dockerd in the foreground (it handles SIGTERM itself)."""
    setup_logging(settings.log_level, settings.secret_values())
    problems = prepare(settings)
    if problems:
        raise UserError("; ".join(problems))
    # before dockerd: it keeps the DOCKER-USER chain it finds
    engine_firewall.install(driver_sources=settings.spark_driver_allowed_networks)
    if settings.docker_use_system:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        watch_system_docker(settings, stop)
        return
    config = write_config(settings)
    remove_stale_files(settings)
    argv = [settings.dockerd_path, "--config-file", str(config)]
    log.info("starting %s (config %s)", " ".join(argv), config)
    os.execvpe(settings.dockerd_path, argv, dockerd_env(settings))


def status(settings: Settings) -> bool:
    """True when the role's Docker daemon answers a ping."""
    return answers(settings.docker_host)
