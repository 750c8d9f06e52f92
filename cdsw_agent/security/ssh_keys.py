"""Each user's own SSH key pair, for cloning `ssh://` and `git@host:path` repositories.

As in CDSW, every user has one ed25519 key pair, made on first use; they add the public half to
their Git server, and clones from an `ssh://` URL authenticate with it, never with the master's
own SSH identity. The pair lives under the data directory, one folder per user id:

    DATA_DIR/ssh/users/<id>/id_ed25519       private key, 0600, the master's account only
    DATA_DIR/ssh/users/<id>/id_ed25519.pub   public key (shown on the account page and the API)
    DATA_DIR/ssh/users/<id>/known_hosts      the Git servers' host keys this user accepted

Rotating makes a new pair (the old public key stops working wherever it was added). The private
key never leaves this folder: ssh reads it from there (`ssh_command`).
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import os
import shlex
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..settings import Settings

PRIVATE = "id_ed25519"
PUBLIC = "id_ed25519.pub"
KNOWN_HOSTS = "known_hosts"
CONNECT_TIMEOUT_SECONDS = 20


@dataclass(frozen=True)
class UserKey:
    directory: Path
    public_key: str          # "ssh-ed25519 AAAA... cdsw-alice@domain"
    fingerprint: str         # "SHA256:..." as ssh-keygen -l prints it
    created_at: dt.datetime

    @property
    def private_path(self) -> Path:
        return self.directory / PRIVATE

    @property
    def known_hosts(self) -> Path:
        return self.directory / KNOWN_HOSTS


def user_dir(data_dir: Path, user_id: int) -> Path:
    return Path(data_dir) / "ssh" / "users" / str(int(user_id))


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One writer per user folder (two first uses at once make one key, not two)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(str(directory), 0o700)
    fd = os.open(str(directory / ".lock"), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    try:
        os.unlink(str(tmp))
    except FileNotFoundError:
        pass
    fd = os.open(str(tmp), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(str(tmp), str(path))


def _fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _generate(directory: Path, comment: str) -> None:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    _write_private(directory / PRIVATE, private)
    (directory / PUBLIC).write_text("%s %s\n" % (public, comment), encoding="utf-8")


def _read(directory: Path) -> Optional[UserKey]:
    try:
        public = (directory / PUBLIC).read_text(encoding="utf-8").strip()
        stat = (directory / PRIVATE).stat()
    except FileNotFoundError:
        return None
    return UserKey(directory, public, _fingerprint(public),
                   dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc).replace(tzinfo=None))


def ensure_key(data_dir: Path, user_id: int, comment: str) -> UserKey:
    """The user's key pair, made now if they have none yet."""
    directory = user_dir(data_dir, user_id)
    key = _read(directory)
    if key is not None:
        return key
    with _locked(directory):
        key = _read(directory)
        if key is None:
            _generate(directory, comment)
            key = _read(directory)
    assert key is not None
    return key


def rotate(data_dir: Path, user_id: int, comment: str) -> UserKey:
    """A new key pair replaces the old one."""
    directory = user_dir(data_dir, user_id)
    with _locked(directory):
        _generate(directory, comment)
        key = _read(directory)
    assert key is not None
    return key


def comment(username: str, domain: str) -> str:
    return "cdsw-%s@%s" % (username, domain)


def for_user(settings: Settings, user_id: int, username: str) -> UserKey:
    """The user's key pair, made on first use."""
    return ensure_key(Path(settings.data_dir), user_id, comment(username, settings.domain))


def rotate_for_user(settings: Settings, user_id: int, username: str) -> UserKey:
    return rotate(Path(settings.data_dir), user_id, comment(username, settings.domain))


def remove(data_dir: Path, user_id: int) -> None:
    shutil.rmtree(str(user_dir(data_dir, user_id)), ignore_errors=True)


def ssh_command(key: UserKey, *, pin_address: Optional[str] = None,
                host_alias: Optional[str] = None) -> str:
    """GIT_SSH_COMMAND that authenticates with this user's key only: no ssh config files
    (-F /dev/null), no agent, no default identities, the user's own known_hosts. With
    pin_address, ssh connects to that (already checked) address whatever DNS says later."""
    argv = ["ssh", "-F", "/dev/null", "-i", str(key.private_path),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", "UserKnownHostsFile=%s" % key.known_hosts,
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=%d" % CONNECT_TIMEOUT_SECONDS,
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            "-o", "ForwardAgent=no", "-o", "ClearAllForwardings=yes"]
    if pin_address:
        argv += ["-o", "HostName=%s" % pin_address, "-o", "CheckHostIP=no"]
        if host_alias:
            argv += ["-o", "HostKeyAlias=%s" % host_alias]
    return " ".join(shlex.quote(a) for a in argv)
