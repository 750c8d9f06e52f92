"""The master's SFTP-only sshd, through which workers mount the project files.

Why a separate sshd and not a `Match User` block in the system's sshd_config: the workbench must
not edit a file the host's admins (and their configuration management) own, and our own
instance can be started, stopped and tested with the role. It listens on its own port, knows one
account, accepts only that account's key, and restricts it twice:
  - sshd_config: `Match User` with `ChrootDirectory <projects>` and `ForceCommand internal-sftp`,
    no TTY, no forwarding of any kind. The chroot is what confines the key to the project files
    (sshd insists every component of its path is root-owned and not group/other-writable);
  - authorized_keys: `restrict,command="internal-sftp"`, so the key stays SFTP-only even if the
    file were ever read by another sshd.
The account has no password (`*`, not locked: sshd refuses locked accounts) and no usable shell.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..loops import Loop
from ..netutil import port_free
from . import mounts
from .config import StorageConfig, StorageError

log = logging.getLogger(__name__)
CLIENT_KEY = "id_ed25519"
HOST_KEY = "ssh_host_ed25519_key"
AUTHORIZED_KEYS = "authorized_keys"
CONFIG = "sshd_config"
RESTRICTION = 'restrict,command="internal-sftp"'
PR_SET_PDEATHSIG = 1
RESTART_SECONDS = 5.0
LISTEN_WAIT_SECONDS = 10.0


def sshd_path() -> Optional[str]:
    # sshd must be started by its absolute path (it re-executes itself)
    return shutil.which("sshd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def render_config(config: StorageConfig) -> str:
    d = config.sshd_dir
    return "\n".join([
        "# Rendered by cdsw_agent.storage: SFTP-only access to project files for workers.",
        "Port %d" % config.ssh_port,
        "ListenAddress %s" % config.ssh_listen,
        "HostKey %s" % (d / HOST_KEY),
        "PidFile %s" % (d / "sshd.pid"),
        "AuthorizedKeysFile %s" % (d / AUTHORIZED_KEYS),
        "AllowUsers %s" % config.ssh_user,
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        "PermitEmptyPasswords no",
        "UsePAM no",
        "StrictModes yes",
        "PermitTTY no",
        "PermitUserRC no",
        "PermitUserEnvironment no",
        "PermitTunnel no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "AllowStreamLocalForwarding no",
        "GatewayPorts no",
        "ClientAliveInterval 15",
        "ClientAliveCountMax 3",
        "Subsystem sftp internal-sftp",
        "Match User %s" % config.ssh_user,
        "    ChrootDirectory %s" % config.projects_dir,
        "    ForceCommand internal-sftp",
        "",
    ])


def authorized_keys_line(public_key: str) -> str:
    return "%s %s\n" % (RESTRICTION, public_key.strip())


def chroot_problem(path: Path) -> Optional[str]:
    """sshd's rule for ChrootDirectory, checked up front so the error says what to fix."""
    current = Path(os.path.abspath(str(path)))
    for part in [current] + list(current.parents):
        try:
            st = part.stat()
        except OSError as e:
            return "cannot stat %s: %s" % (part, e.strerror or e)
        if st.st_uid != 0 or st.st_mode & 0o022:
            return ("project storage for workers needs %s root-owned and not group/other-"
                    "writable (sshd ChrootDirectory rule); it is uid %d mode %o"
                    % (part, st.st_uid, st.st_mode & 0o7777))
    return None


def _keygen(path: Path, comment: str) -> None:
    """A new ed25519 key pair at path(.pub), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=str(path.parent), prefix=".keygen-") as tmp:
        tmp_key = Path(tmp) / "key"
        r = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                            "-f", str(tmp_key)], capture_output=True, text=True)
        if r.returncode != 0:
            raise StorageError("ssh-keygen failed: %s" % mounts.one_line(r.stderr))
        os.replace(str(tmp_key.with_suffix(".pub")), str(path) + ".pub")
        os.replace(str(tmp_key), str(path))


def ensure_keys(config: StorageConfig) -> None:
    """Client key pair (first start), host key, and the restricted authorized_keys entry."""
    config.ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(str(config.ssh_dir), 0o700)
    config.sshd_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(str(config.sshd_dir), 0o755)  # the account reads authorized_keys from here
    client = config.ssh_dir / CLIENT_KEY
    if not client.exists():
        _keygen(client, "cdsw-storage")
        log.info("generated the project storage key pair in %s", config.ssh_dir)
    if not (config.sshd_dir / HOST_KEY).exists():
        _keygen(config.sshd_dir / HOST_KEY, "cdsw-storage-host")
    public = Path(str(client) + ".pub").read_text()
    line = authorized_keys_line(public)
    keys = config.sshd_dir / AUTHORIZED_KEYS
    if not keys.exists() or keys.read_text() != line:
        tmp = keys.with_name("." + AUTHORIZED_KEYS + ".tmp")
        tmp.write_text(line)
        os.chmod(str(tmp), 0o644)
        os.replace(str(tmp), str(keys))


def _nologin() -> str:
    for path in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false"):
        if os.path.exists(path):
            return path
    return "/bin/false"


def ensure_account(name: str, uid: Optional[int]) -> pwd.struct_passwd:
    """The storage account: system, no home, no shell, password `*` (no password, not locked).
    It takes the engines' uid when free, so files written from a worker have the same owner as
    those an engine on the master writes."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    argv = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", _nologin(), "--password", "*", "--comment", "CDSW project storage (SFTP)"]
    if uid is not None:
        try:
            owner = pwd.getpwuid(uid).pw_name
            log.warning("uid %d is taken by %s; the storage account %s gets another uid, so files "
                        "written from workers will be owned differently", uid, owner, name)
        except KeyError:
            argv += ["--uid", str(uid)]
    r = subprocess.run(argv + [name], capture_output=True, text=True)
    if r.returncode != 0:
        raise StorageError("cannot create the storage account %s: %s"
                           % (name, mounts.one_line(r.stderr)))
    log.info("created the project storage account %s", name)
    return pwd.getpwnam(name)


def worker_credentials(config: StorageConfig) -> Dict[str, Any]:
    """What a worker needs to mount the project files (the answer of POST /cluster/storage).
    Holds a private key: send it only to a caller that proved the cluster secret."""
    if not config.serve_sftp:
        return {"backend": config.backend}
    try:
        private_key = (config.ssh_dir / CLIENT_KEY).read_text()
        host_key = " ".join((config.sshd_dir / (HOST_KEY + ".pub")).read_text().split()[:2])
    except OSError:
        raise StorageError("the master has no storage key yet; start the master as root") \
            from None
    return {"backend": "sshfs", "user": config.ssh_user, "port": config.ssh_port, "path": "/",
            "private_key": private_key, "host_key": host_key}


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the master dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class SftpServer:
    """Runs sshd in the foreground as a child and restarts it when it exits."""

    def __init__(self, config: StorageConfig):
        self.config = config
        self.proc: Optional[subprocess.Popen] = None
        self._failures = 0  # restarts in a row
        self._supervisor = Loop("storage-sshd", lambda: self._supervise(), RESTART_SECONDS,
                                log=log, what="storage sshd supervisor", delay_first=True)

    def prepare(self) -> List[str]:
        problems = []
        if not sshd_path():
            problems.append("sshd not found; install openssh-server (workers mount project "
                            "files over SFTP) or set storage_backend to local or nfs")
        if os.geteuid() != 0:
            problems.append("serving project files to workers needs the master to run as root")
        if not shutil.which("ssh-keygen"):
            problems.append("ssh-keygen not found; install openssh-client")
        chroot = chroot_problem(self.config.projects_dir)
        if chroot:
            problems.append(chroot)
        if not port_free(self.config.ssh_listen, self.config.ssh_port):
            problems.append("port %d on %s is already in use; stop what uses it or set "
                            "storage_ssh_port" % (self.config.ssh_port, self.config.ssh_listen))
        return problems

    def setup(self) -> Path:
        """Account, keys and config; returns the config file, checked with `sshd -t`."""
        ensure_account(self.config.ssh_user, self.config.account_uid)
        ensure_keys(self.config)
        path = self.config.sshd_dir / CONFIG
        path.write_text(render_config(self.config))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        r = subprocess.run([sshd_path() or "sshd", "-t", "-f", str(path)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise StorageError("storage sshd config %s is invalid: %s"
                               % (path, mounts.one_line(r.stderr)))
        return path

    def start(self) -> "SftpServer":
        problems = self.prepare()
        if problems:
            raise StorageError("; ".join(problems))
        self._spawn(self.setup())
        self._wait_listening()
        self._supervisor.start()
        log.info("project storage: SFTP for workers on port %d (account %s)",
                 self.config.ssh_port, self.config.ssh_user)
        return self

    def _spawn(self, config_file: Path) -> None:
        log_file = open(str(self.config.sshd_dir / "sshd.log"), "ab")
        try:
            self.proc = subprocess.Popen(
                [sshd_path() or "sshd", "-D", "-e", "-f", str(config_file)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent)
        finally:
            log_file.close()

    def _log_tail(self) -> str:
        try:
            return mounts.one_line((self.config.sshd_dir / "sshd.log").read_text(errors="replace"))
        except OSError:
            return ""

    def _wait_listening(self) -> None:
        """Return once sshd accepts connections; raise with its last log line if it exits."""
        host = "127.0.0.1" if self.config.ssh_listen in ("0.0.0.0", "::", "") \
            else self.config.ssh_listen
        deadline = time.monotonic() + LISTEN_WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise StorageError("storage sshd exited at start: %s" % (self._log_tail() or "?"))
            try:
                socket.create_connection((host, self.config.ssh_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise StorageError("storage sshd does not listen on port %d after %.0fs"
                           % (self.config.ssh_port, LISTEN_WAIT_SECONDS))

    def _supervise(self) -> None:
        """Every RESTART_SECONDS: restart sshd when it has exited."""
        if self.proc is None or self.proc.poll() is None:
            self._failures = 0
            return
        if self._failures % 12 == 0:  # the first time, then once a minute
            log.warning("storage sshd exited with %s (%s); restarting", self.proc.returncode,
                        self._log_tail() or "no log")
        self._failures += 1
        try:
            self._spawn(self.config.sshd_dir / CONFIG)
        except OSError as e:
            log.warning("cannot restart the storage sshd: %s", e)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop sshd and the sessions it serves (each runs in its own session, so a signal to
        sshd alone would leave them behind)."""
        self._supervisor.stop(RESTART_SECONDS + 1)
        if self.proc is None or self.proc.poll() is not None:
            return
        sessions = children(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def children(pid: int) -> List[int]:
    """Direct children of a process, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 1 and fields[1] == str(pid):
                found.append(int(entry.name))
    return found
