"""An NFS export mounted on every node (the master too): the production option.

NFS cannot run on the development machine (no kernel NFS client or server), so this path is
covered by unit tests of its command lines only. Use a hard mount: a soft one can turn a short
server outage into silently truncated writes.
"""

from __future__ import annotations

import os
import re
from typing import List

from . import mounts
from .base import MountedStorage
from .config import StorageError

_EXPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):/\S*$")


def nfs_command(export: str, options: str, mount_point: str) -> List[str]:
    if not _EXPORT.match(export or ""):
        raise StorageError("storage_nfs_export %r: expected HOST:/PATH, e.g. "
                           "nfs.example.com:/export/cdsw" % export)
    if re.search(r"\s", options):
        raise StorageError("storage_nfs_options %r: no spaces; separate options with commas"
                           % options)
    argv = ["mount", "-t", "nfs"]
    if options:
        argv += ["-o", options]
    return argv + [export, mount_point]


class NfsStorage(MountedStorage):
    name = "nfs"
    fstypes = ("nfs", "nfs4")

    def mount_command(self) -> List[str]:
        return nfs_command(self.config.nfs_export, self.config.nfs_options, str(self.root))

    def may_recover(self) -> bool:
        """A hard NFS mount resumes when the server is back."""
        return mounts.mount_entry(self.root) is not None

    def prepare(self) -> List[str]:
        problems = []
        if not (os.path.exists("/sbin/mount.nfs") or os.path.exists("/usr/sbin/mount.nfs")):
            problems.append("mount.nfs not found; install nfs-utils (RHEL) or nfs-common (Debian)")
        root = self.root_problem()
        if root:
            problems.append(root)
        try:
            self.mount_command()
        except StorageError as e:
            problems.append(str(e))
        return problems
