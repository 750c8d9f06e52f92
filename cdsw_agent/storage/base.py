"""The project storage interface, and the part shared by backends that mount something."""

from __future__ import annotations

import abc
import logging
import os
import shutil
from pathlib import Path
from typing import List, Optional

from ..orchestrators.base import Mount
from . import mounts
from .config import ENGINE_HOME, StorageConfig, StorageError

log = logging.getLogger(__name__)


class ProjectStorage(abc.ABC):
    """Project files of one node, at config.projects_dir (the same path on every node)."""

    name = "abstract"

    def __init__(self, config: StorageConfig):
        self.config = config

    @property
    def root(self) -> Path:
        return self.config.projects_dir

    def project_path(self, project_id: int) -> Path:
        if isinstance(project_id, bool) or not isinstance(project_id, int) or project_id < 1:
            raise StorageError("project id %r: expected a positive integer" % (project_id,))
        return self.root / str(project_id)

    def engine_mount(self, project_id: int) -> Mount:
        """The project folder as the orchestrator mounts it into an engine, at /home/cdsw.
        The source path is the same on every node, so the mount works wherever it is placed."""
        return Mount(source=str(self.project_path(project_id)), target=ENGINE_HOME)

    def prepare(self) -> List[str]:
        """Pre-flight: one line per problem, empty when this node can use the backend."""
        return []

    @abc.abstractmethod
    def ensure(self) -> None:
        """Make the files reachable at root (mount when needed); raises StorageError."""

    @abc.abstractmethod
    def check(self) -> Optional[str]:
        """None when the files are reachable, else why not (one line). Never hangs."""

    def remount(self) -> None:
        """Drop whatever is there and make the files reachable again."""
        self.ensure()

    def may_recover(self) -> bool:
        """Whether a failing mount may come back by itself (its server process still runs), so
        remounting, which cuts off running engines, should wait a little."""
        return False

    def release(self) -> None:  # noqa: B027 (optional: local storage has nothing to undo)
        """Undo ensure() (unmount)."""


class MountedStorage(ProjectStorage):
    """A backend that mounts a remote file system on root."""

    fstypes: tuple = ()

    @abc.abstractmethod
    def mount_command(self) -> List[str]:
        """argv that mounts the remote files on root."""

    def before_mount(self) -> None:
        """Get what the mount needs (keys, ...) just before mounting."""

    def check(self) -> Optional[str]:
        entry = mounts.mount_entry(self.root)
        if entry is None:
            return "not mounted"
        if entry.fstype not in self.fstypes:
            return "%s is mounted there, expected %s" % (entry.fstype, " or ".join(self.fstypes))
        ok, why = mounts.responsive(self.root, self.config.check_timeout)
        return None if ok else why or "not responding"

    def ensure(self) -> None:
        if self.check() is None:
            return
        self.remount()

    def remount(self) -> None:
        self.release()
        self.before_mount()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError("cannot create mount point %s: %s"
                               % (self.root, e.strerror or e)) from None
        argv = self.mount_command()
        code, out = mounts.run_bounded(argv, self.config.mount_timeout)
        if code != 0:
            self.release()  # a half-made mount must not stay behind
            why = mounts.one_line(out) or "exit %s" % code
            raise StorageError("%s mount of %s failed: %s" % (self.name, self.root, why))
        problem = self.check()
        if problem:
            self.release()
            raise StorageError("%s mount of %s does not answer: %s"
                               % (self.name, self.root, problem))

    def release(self) -> None:
        problem = mounts.detach(self.root)
        if problem:
            raise StorageError(problem)

    def missing_tools(self, *tools: str) -> List[str]:
        return [t for t in tools if not shutil.which(t)]

    @staticmethod
    def root_problem() -> Optional[str]:
        return None if os.geteuid() == 0 else "mounting project storage needs root"
