"""A worker mounts the master's project files over SFTP with sshfs (FUSE).

The key and the master's host key come from the master (POST /api/v1/cluster/storage with the
cluster secret) and are kept in data_dir/storage/ssh; the host key is pinned
(StrictHostKeyChecking=yes). An admin may instead give a key file (storage_ssh_key); the host
key is then trusted on first use. `reconnect` lets sshfs survive a dropped connection without
losing the mount (running engines keep working); the watchdog remounts when sshfs itself dies.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import mounts
from .base import MountedStorage
from .config import StorageConfig, StorageError

log = logging.getLogger(__name__)
KEY_NAME = "id_ed25519"
KNOWN_HOSTS = "known_hosts"
ALIVE_SECONDS = 15
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_HOST_KEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) [A-Za-z0-9+/]+=*$")
_KEY_HEADER = "-----BEGIN OPENSSH PRIVATE KEY-----"

Fetch = Callable[[], Dict[str, Any]]


def _no_commas(name: str, value: str) -> str:
    if "," in value:
        raise StorageError("%s %s contains a comma, which sshfs options cannot carry"
                           % (name, value))
    return value


def host_spec(host: str) -> str:
    return "[%s]" % host if ":" in host else host  # IPv6 literals


def known_hosts_line(host: str, port: int, host_key: str) -> str:
    name = host_spec(host) if port == 22 else "[%s]:%d" % (host, port)
    return "%s %s\n" % (name, host_key.strip())


def sshfs_command(user: str, host: str, port: int, key: str, known_hosts: str, mount_point: str,
                  strict: bool = True, alive_seconds: int = ALIVE_SECONDS) -> List[str]:
    """argv of a daemonizing sshfs; the remote path is / because the account is chrooted to
    the master's projects folder."""
    options = [
        "reconnect", "ServerAliveInterval=%d" % alive_seconds, "ServerAliveCountMax=3",
        "ConnectTimeout=10", "BatchMode=yes", "PasswordAuthentication=no", "IdentitiesOnly=yes",
        "IdentityFile=" + _no_commas("key", key),
        "UserKnownHostsFile=" + _no_commas("known_hosts", known_hosts),
        "StrictHostKeyChecking=" + ("yes" if strict else "accept-new"),
        "allow_other",  # engines run as their own uid, not as root who mounts
        "default_permissions",  # the kernel checks modes as on the master's bind mounts
    ]
    return ["sshfs", "%s@%s:/" % (user, host_spec(host)), mount_point, "-p", str(port),
            "-o", ",".join(options)]


def _write_private(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.chmod(str(tmp), mode)
    os.replace(str(tmp), str(path))


def install_credentials(config: StorageConfig,
                        answer: Dict[str, Any]) -> Tuple[Path, Path, int, str]:
    """Keep what the master answered in ssh_dir; returns (key, known_hosts, port, user)."""
    if answer.get("backend") != "sshfs":
        raise StorageError("the master shares project files with %r, not sshfs; set the same "
                           "storage_backend on every host" % answer.get("backend"))
    user, port = str(answer.get("user", "")), answer.get("port")
    key, host_key = str(answer.get("private_key", "")), str(answer.get("host_key", ""))
    if not _USER.match(user) or not isinstance(port, int) or not 0 < port < 65536:
        raise StorageError("the master's storage answer has no valid user and port")
    if not key.startswith(_KEY_HEADER) or not _HOST_KEY.match(host_key.strip()):
        raise StorageError("the master's storage answer has no valid private key and host key")
    ssh_dir = config.ssh_dir
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(str(ssh_dir), 0o700)
    _write_private(ssh_dir / KEY_NAME, key, 0o600)
    known = known_hosts_line(config.master_host, port, host_key)
    _write_private(ssh_dir / KNOWN_HOSTS, known, 0o644)
    return ssh_dir / KEY_NAME, ssh_dir / KNOWN_HOSTS, port, user


def sshfs_pids(mount_point: Path) -> List[int]:
    """sshfs processes serving this mount point (found in /proc by their command line)."""
    target = os.path.normpath(str(mount_point))
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode("utf-8", "replace") for a in argv if a]
        if args and os.path.basename(args[0]) == "sshfs" and \
                any(os.path.normpath(a) == target for a in args[1:]):
            pids.append(int(entry.name))
    return pids


class SshfsStorage(MountedStorage):
    name = "sshfs"
    fstypes = ("fuse.sshfs",)

    def __init__(self, config: StorageConfig, fetch: Optional[Fetch] = None):
        super().__init__(config)
        self.fetch = fetch
        # key file, known_hosts file, port, user, strict host key checking
        self._login: Optional[Tuple[str, str, int, str, bool]] = None

    def before_mount(self) -> None:
        cfg = self.config
        if cfg.ssh_key:  # given by the admin: trust the master's host key on first use
            if not os.access(cfg.ssh_key, os.R_OK):
                raise StorageError("storage_ssh_key %s is not readable" % cfg.ssh_key)
            cfg.ssh_dir.mkdir(parents=True, exist_ok=True)
            self._login = (cfg.ssh_key, str(cfg.ssh_dir / KNOWN_HOSTS), cfg.ssh_port,
                           cfg.ssh_user, False)
            return
        try:
            if self.fetch is None:
                raise StorageError("no way to ask the master for the storage key; set "
                                   "storage_ssh_key")
            key, known, port, user = install_credentials(cfg, self.fetch())
            self._login = (str(key), str(known), port, user, True)
        except Exception as e:  # the master may be down: a key fetched earlier still works
            if self._login is None and (cfg.ssh_dir / KEY_NAME).exists() and \
                    (cfg.ssh_dir / KNOWN_HOSTS).exists():
                self._login = (str(cfg.ssh_dir / KEY_NAME), str(cfg.ssh_dir / KNOWN_HOSTS),
                               cfg.ssh_port, cfg.ssh_user, True)
            if self._login is None:
                raise StorageError("cannot get the storage key from the master: %s" % e) \
                    from None
            log.debug("using the storage key fetched earlier: %s", e)

    def mount_command(self) -> List[str]:
        if self._login is None:
            raise StorageError("no storage key yet")
        key, known, port, user, strict = self._login
        return sshfs_command(user, self.config.master_host, port, key, known, str(self.root),
                             strict=strict)

    def may_recover(self) -> bool:
        """sshfs still runs: its `reconnect` brings a dropped connection back by itself."""
        return mounts.mount_entry(self.root) is not None and bool(sshfs_pids(self.root))

    def release(self) -> None:
        problem = mounts.detach(self.root)
        for pid in sshfs_pids(self.root):  # detached, it would linger (SIGKILL: it may be hung)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if problem:
            raise StorageError(problem)

    def prepare(self) -> List[str]:
        problems = ["%s not found; install sshfs (RHEL: fuse-sshfs from EPEL; Debian: sshfs)" % t
                    for t in self.missing_tools("sshfs")]
        if not mounts.fusermount():
            problems.append("fusermount not found; install fuse3 (or fuse)")
        if not os.path.exists("/dev/fuse"):
            problems.append("/dev/fuse is missing; load the fuse kernel module (modprobe fuse)")
        root = self.root_problem()
        if root:
            problems.append(root)
        if self.config.ssh_key and not os.access(self.config.ssh_key, os.R_OK):
            problems.append("storage_ssh_key %s is not readable" % self.config.ssh_key)
        return problems
