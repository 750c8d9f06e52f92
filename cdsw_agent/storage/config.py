"""Where project files live and how a node reaches them, from the settings.

Backends:
  local  the master's own disk: data_dir/projects as is (single host, or the master itself);
  sshfs  a worker mounts the master's data_dir/projects at the same path over SFTP (FUSE),
         with a key the master generated and restricted to an SFTP-only, chrooted account;
  nfs    every node (the master too) mounts an NFS export at data_dir/projects (production).
`auto` (the default) means local on the master and sshfs on a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from ..settings.schema import BY_NAME

BACKENDS = ("auto", "local", "sshfs", "nfs")
ROLES = ("master", "worker")
ENGINE_HOME = "/home/cdsw"  # where engines see their project (images.recipe.ENGINE_HOME)
ENGINE_UID = 8536  # engines' uid (images.recipe.ENGINE_UID); the storage account takes it too

class StorageError(UserError):
    """Project storage cannot be used; str() is one line that says what to fix."""


@dataclass(frozen=True)
class StorageConfig:
    backend: str  # local | sshfs | nfs (auto resolved)
    role: str  # master | worker
    projects_dir: Path  # the same path on every node
    state_dir: Path  # keys, sshd config: data_dir/storage
    master_host: str = "127.0.0.1"
    ssh_port: int = 2222
    ssh_user: str = "cdsw-storage"
    ssh_key: str = ""  # worker: a key file given by the admin instead of fetching it
    ssh_listen: str = "0.0.0.0"
    account_uid: Optional[int] = ENGINE_UID
    nfs_export: str = ""
    nfs_options: str = BY_NAME["storage_nfs_options"].default
    check_seconds: float = 15.0
    check_timeout: float = 10.0  # a stat of the mount that takes longer means it hangs
    mount_timeout: float = 30.0
    hang_grace: float = 60.0  # a failing mount whose server still runs gets this long to recover
    serve_sftp: bool = False  # master: run the SFTP-only sshd for workers
    explicit: bool = False  # the admin chose the backend: its problems stop the role

    @property
    def ssh_dir(self) -> Path:
        """The client key pair (0700): generated on the master, installed on a worker."""
        return self.state_dir / "ssh"

    @property
    def sshd_dir(self) -> Path:
        """The master's sshd: config, host key, authorized_keys (0755, the account reads it)."""
        return self.state_dir / "sshd"

    def with_(self, **changes: Any) -> "StorageConfig":
        return replace(self, **changes)


def from_settings(settings: Any, role: str) -> StorageConfig:
    if role not in ROLES:
        raise ValueError("role must be one of %s" % ", ".join(ROLES))
    chosen = str(settings.storage_backend)
    if chosen not in BACKENDS:
        raise StorageError("storage_backend %r: expected one of %s" % (chosen, ", ".join(BACKENDS)))
    if chosen == "nfs":
        backend = "nfs"
    elif role == "master" or chosen == "local":
        backend = "local"  # the master holds the files; sshfs on a master means "serve them"
    else:
        backend = "sshfs"
    export = str(settings.storage_nfs_export)
    if backend == "nfs" and not export:
        raise StorageError("storage_backend is nfs but storage_nfs_export is empty; set it to "
                           "HOST:/PATH of the export")
    listen = settings.bind_address or "0.0.0.0"
    return StorageConfig(
        backend=backend, role=role, projects_dir=Path(settings.projects_dir),
        state_dir=Path(settings.data_dir) / "storage", master_host=settings.master_host,
        ssh_port=int(settings.storage_ssh_port),
        ssh_user=str(settings.storage_ssh_user),
        ssh_key=str(settings.storage_ssh_key), ssh_listen=listen,
        nfs_export=export, nfs_options=str(settings.storage_nfs_options),
        check_seconds=float(settings.storage_check_seconds),
        serve_sftp=role == "master" and chosen in ("auto", "sshfs"),
        explicit=chosen != "auto")
