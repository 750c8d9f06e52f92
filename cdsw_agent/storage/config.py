"""Where project files live and how a node reaches them, from the settings.

Backends:
  local  the master's own disk: data_dir/projects as is (single host, or the master itself);
  sshfs  a worker mounts the master's data_dir/projects at the same path over SFTP (FUSE),
         with a key the master generated and restricted to an SFTP-only, chrooted account;
  nfs    every node (the master too) mounts an NFS export at data_dir/projects (production).
`auto` (the default) means local on the master and sshfs on a worker.

The storage_* settings are read with defaults so this package works before they are declared
in settings/schema.py (see PROPOSED_SETTINGS).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError

BACKENDS = ("auto", "local", "sshfs", "nfs")
ROLES = ("master", "worker")
ENGINE_HOME = "/home/cdsw"  # where engines see their project (images.recipe.ENGINE_HOME)
ENGINE_UID = 8536  # engines' uid (images.recipe.ENGINE_UID); the storage account takes it too

# name -> (kind, default, description): what the lead is asked to add to settings/schema.py
PROPOSED_SETTINGS = {
    "storage_backend": ("choice", "auto", "How nodes reach project files: auto (local on the "
                        "master, sshfs on workers), local, sshfs or nfs."),
    "storage_ssh_port": ("int", 2222, "Port of the master's SFTP-only sshd that workers mount "
                         "project files from (sshfs)."),
    "storage_ssh_user": ("str", "cdsw-storage", "Account on the master that owns SFTP access to "
                         "project files; created at the first start, no shell, chrooted."),
    "storage_ssh_key": ("str", "", "Worker: private key for the sshfs mount; empty fetches it "
                        "from the master with the cluster secret."),
    "storage_nfs_export": ("str", "", "NFS export holding project files, e.g. "
                           "nfs.example.com:/export/cdsw (storage_backend=nfs)."),
    "storage_nfs_options": ("str", "rw,hard,nfsvers=4.1,timeo=600,retrans=2,noatime",
                            "Mount options of the NFS export."),
    "storage_check_seconds": ("int", 15, "How often a node checks its project mount and "
                              "remounts it when it dropped."),
}


class StorageError(UserError):
    """Project storage cannot be used; str() is one line that says what to fix."""


def _setting(settings: Any, name: str) -> Any:
    return getattr(settings, name, PROPOSED_SETTINGS[name][1])


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
    nfs_options: str = PROPOSED_SETTINGS["storage_nfs_options"][1]
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
    chosen = str(_setting(settings, "storage_backend"))
    if chosen not in BACKENDS:
        raise StorageError("storage_backend %r: expected one of %s" % (chosen, ", ".join(BACKENDS)))
    if chosen == "nfs":
        backend = "nfs"
    elif role == "master" or chosen == "local":
        backend = "local"  # the master holds the files; sshfs on a master means "serve them"
    else:
        backend = "sshfs"
    export = str(_setting(settings, "storage_nfs_export"))
    if backend == "nfs" and not export:
        raise StorageError("storage_backend is nfs but storage_nfs_export is empty; set it to "
                           "HOST:/PATH of the export")
    listen = getattr(settings, "bind_address", "0.0.0.0") or "0.0.0.0"
    return StorageConfig(
        backend=backend, role=role, projects_dir=Path(settings.projects_dir),
        state_dir=Path(settings.data_dir) / "storage", master_host=settings.master_host,
        ssh_port=int(_setting(settings, "storage_ssh_port")),
        ssh_user=str(_setting(settings, "storage_ssh_user")),
        ssh_key=str(_setting(settings, "storage_ssh_key")), ssh_listen=listen,
        nfs_export=export, nfs_options=str(_setting(settings, "storage_nfs_options")),
        check_seconds=float(_setting(settings, "storage_check_seconds")),
        serve_sftp=role == "master" and chosen in ("auto", "sshfs"),
        explicit=chosen != "auto")
