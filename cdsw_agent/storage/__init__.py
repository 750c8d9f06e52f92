"""Project storage: where project files live and how every node reaches them.

The master keeps them in data_dir/projects; engines on the master bind-mount them, engines on
workers see them through a mount at the same path (sshfs here, NFS in production). Roles call
the functions below; the orchestrator gets an engine's mount from engine_mount().
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

from ..orchestrators.base import Mount
from .base import ProjectStorage
from .config import StorageConfig, StorageError, from_settings
from .local import LocalStorage
from .nfs import NfsStorage
from .sftp_server import SftpServer
from .sftp_server import worker_credentials as _credentials
from .sshfs import SshfsStorage
from .watchdog import MountWatchdog

__all__ = ["ProjectStorage", "StorageConfig", "StorageError", "MountWatchdog",
           "for_config", "for_node", "engine_mount", "master_prepare", "start_master",
           "worker_prepare", "start_worker", "heartbeat_fields", "worker_credentials"]

log = logging.getLogger(__name__)
Post = Callable[..., Dict[str, Any]]


def for_config(config: StorageConfig, fetch: Optional[Callable[[], Dict[str, Any]]] = None
               ) -> ProjectStorage:
    if config.backend == "sshfs":
        return SshfsStorage(config, fetch)
    if config.backend == "nfs":
        return NfsStorage(config)
    return LocalStorage(config)


def for_node(settings: Any, role: str, post: Optional[Post] = None) -> ProjectStorage:
    """This node's storage; post is the worker's call to the master's cluster API."""
    fetch = (lambda: post("/storage")) if post is not None else None
    return for_config(from_settings(settings, role), fetch)


def engine_mount(settings: Any, project_id: int) -> Mount:
    """The project's folder mounted at /home/cdsw, valid on whichever node the engine lands."""
    return for_node(settings, "master").engine_mount(project_id)


def worker_credentials(settings: Any) -> Dict[str, Any]:
    """The answer of POST /api/v1/cluster/storage (holds a private key: secret-authenticated)."""
    return _credentials(from_settings(settings, "master"))


class _Nothing:
    def stop(self) -> None:
        pass


def master_prepare(settings: Any) -> List[str]:
    """Master pre-flight. Only a backend the admin chose explicitly can stop the master; with
    `auto` a master that cannot serve workers still serves itself (start_master says why)."""
    try:
        config = from_settings(settings, "master")
    except StorageError as e:
        return [str(e)]
    if not config.explicit:
        return []
    if config.serve_sftp:
        return SftpServer(config).prepare()
    return for_config(config).prepare()


def start_master(settings: Any) -> Any:
    """Start what the master's storage needs; returns an object whose stop() undoes it."""
    config = from_settings(settings, "master")
    if config.backend == "nfs":
        storage = NfsStorage(config)
        watchdog = MountWatchdog(storage, config.check_seconds)
        if not watchdog.check_once():
            raise StorageError(watchdog.last_error)
        return watchdog.start()
    if not config.serve_sftp:
        return _Nothing()
    try:
        return SftpServer(config).start()
    except (StorageError, OSError) as e:
        if config.explicit:
            raise StorageError("cannot serve project files to workers: %s" % e) from None
        log.warning("project files are not shared with workers: %s", e)
        return _Nothing()


def worker_prepare(settings: Any) -> List[str]:
    """Worker pre-flight: sshfs/fusermount and /dev/fuse (or mount.nfs), one line each."""
    try:
        return for_node(settings, "worker").prepare()
    except StorageError as e:
        return [str(e)]


def start_worker(settings: Any, post: Optional[Post]) -> MountWatchdog:
    """Mount the project files (in the background) and keep them mounted."""
    storage = for_node(settings, "worker", post)
    return MountWatchdog(storage, storage.config.check_seconds).start()


def heartbeat_fields(report: Dict[str, Any], watchdog: Optional[MountWatchdog]) -> Dict[str, Any]:
    """A heartbeat with the mount state: checks["project_storage"] and a `storage` object."""
    if watchdog is None:
        return report
    state = watchdog.state()
    checks = dict(report.get("checks", {}))
    checks["project_storage"] = "mounted" if state["mounted"] else \
        "not mounted: %s" % (state["last_error"] or "not checked yet")
    return dict(report, checks=checks, storage=state)
