"""Pre-install checks of a host (`cdsw validate`): can the workbench be installed here?

They only look: nothing is created, installed or started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..netutil import port_free
from .registry import HealthContext, Outcome, Registry, critical, ok, unknown, warning

VALIDATE = Registry()
MIN_PYTHON = (3, 9)
MIN_FREE_BYTES = 20 * 1024 ** 3  # engines images, projects and the database want room
PROC_MOUNTS = "/proc/self/mounts"
# package managers that can install Docker, and the command to say
INSTALLERS = (("apt-get", "apt-get install -y docker.io"), ("dnf", "dnf install -y docker-ce"),
              ("yum", "yum install -y docker-ce"), ("zypper", "zypper install -y docker"))


def existing_ancestor(path: Path) -> Path:
    """The path itself, or the nearest parent that exists."""
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return candidate
    return Path("/")


@VALIDATE.register("python_version", "Python is 3.9 or newer.")
def python_version(ctx: HealthContext) -> Outcome:
    version = "%d.%d.%d" % sys.version_info[:3]
    if sys.version_info[:2] < MIN_PYTHON:
        return critical("Python %s is too old; install Python %d.%d or newer" % ((version,)
                                                                                 + MIN_PYTHON))
    return ok("Python %s (%s)" % (version, sys.executable), version=version)


@VALIDATE.register("data_dir", "The data directory exists and is writable, or can be created.")
def data_dir(ctx: HealthContext) -> Outcome:
    path = Path(ctx.settings.data_dir)
    if path.exists():
        if not path.is_dir():
            return critical("%s exists but is not a directory" % path)
        if not os.access(str(path), os.W_OK | os.X_OK):
            return critical("%s is not writable by uid %d" % (path, os.geteuid()))
        return ok("%s exists and is writable" % path)
    parent = existing_ancestor(path)
    if not parent.is_dir() or not os.access(str(parent), os.W_OK | os.X_OK):
        return critical("%s cannot be created: %s is not writable by uid %d"
                        % (path, parent, os.geteuid()))
    return ok("%s can be created (under %s)" % (path, parent))


@VALIDATE.register("disk_space", "The data directory's file system has room.")
def disk_space(ctx: HealthContext) -> Outcome:
    where = existing_ancestor(Path(ctx.settings.data_dir))
    usage = shutil.disk_usage(str(where))
    pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    data = {"path": str(where), "free_bytes": usage.free, "free_percent": round(pct, 2)}
    text = "%.1f GiB free on %s (%.1f%%)" % (usage.free / 1024 ** 3, where, pct)
    if pct < ctx.settings.storage_free_critical_percent:
        return critical(text + "; free space first", **data)
    if pct < ctx.settings.storage_free_warning_percent or usage.free < MIN_FREE_BYTES:
        return warning(text + "; %d GiB or more is recommended" % (MIN_FREE_BYTES // 1024 ** 3),
                       **data)
    return ok(text, **data)


@VALIDATE.register("port_free", "The web port (http_port) is free on bind_address.")
def port_is_free(ctx: HealthContext) -> Outcome:
    s = ctx.settings
    if port_free(s.bind_address, s.http_port):
        return ok("port %d is free on %s" % (s.http_port, s.bind_address))
    return critical("port %d on %s is in use; stop what uses it (is the workbench already "
                    "running?) or set cdsw.http.port" % (s.http_port, s.bind_address))


def _which(name: str) -> Optional[str]:
    return name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)


@VALIDATE.register("docker_binary", "Docker is installed, or a package manager can install it.")
def docker_binary(ctx: HealthContext) -> Outcome:
    s = ctx.settings
    if s.orchestrator != "swarm":
        return ok("not needed (orchestrator is %s)" % s.orchestrator)
    wanted = "docker" if s.docker_use_system else s.dockerd_path
    found = _which(wanted)
    if found:
        return ok("%s found at %s" % (wanted, found), path=found)
    for tool, command in INSTALLERS:
        if shutil.which(tool):
            return warning("%s is not installed; install it with `%s`" % (wanted, command))
    return critical("%s is not installed and no package manager was found; install Docker" % wanted)


def cgroup_versions(mounts: str) -> List[str]:
    """Which cgroup hierarchies /proc/self/mounts shows: 'v1', 'v2', both or none."""
    types = {line.split()[2] for line in mounts.splitlines() if len(line.split()) > 2}
    return [v for v, fs in (("v1", "cgroup"), ("v2", "cgroup2")) if fs in types]


@VALIDATE.register("cgroups", "cgroups are mounted (Docker needs them for CPU and memory limits).")
def cgroups(ctx: HealthContext) -> Outcome:
    try:
        with open(PROC_MOUNTS, encoding="utf-8", errors="replace") as f:
            versions = cgroup_versions(f.read())
    except OSError as e:
        return unknown("cannot read %s: %s" % (PROC_MOUNTS, e.strerror or e))
    if not versions:
        return critical("no cgroup file system is mounted; mount /sys/fs/cgroup (systemd does "
                        "this at boot)")
    return ok("cgroup %s mounted" % " and ".join(versions), versions=versions)


@VALIDATE.register("dns", "The workbench domain resolves.", timeout=4.0)
def dns(ctx: HealthContext) -> Outcome:
    domain = ctx.settings.domain
    try:
        infos = socket.getaddrinfo(domain, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as e:
        return warning("%s does not resolve (%s); add a DNS record for it (and *.%s) pointing "
                       "at the master" % (domain, e, domain))
    addresses: Dict[str, None] = dict.fromkeys(str(info[4][0]) for info in infos)
    return ok("%s resolves to %s" % (domain, ", ".join(addresses)), addresses=list(addresses))


@VALIDATE.register("clock_sync", "The system clock is synchronised (optional).", timeout=4.0)
def clock_sync(ctx: HealthContext) -> Outcome:
    tool = shutil.which("timedatectl")
    if tool is None:
        return ok("cannot tell (no timedatectl); make sure chronyd or ntpd runs")
    proc = subprocess.run([tool, "show", "-p", "NTPSynchronized", "--value"],
                          capture_output=True, text=True, timeout=3)
    value = proc.stdout.strip()
    if proc.returncode != 0 or value not in ("yes", "no"):
        return ok("cannot tell (timedatectl: %s); make sure chronyd or ntpd runs"
                  % ((proc.stderr or value).strip().splitlines() or ["no answer"])[0])
    if value == "no":
        return warning("the clock is not synchronised; enable chronyd or ntpd")
    return ok("the clock is synchronised")
