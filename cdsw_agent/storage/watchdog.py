"""Keeps a node's project mount alive: checks it every few seconds and remounts it when dropped.

Checks never hang the caller (see mounts.py). A mount whose server process died is remounted at
once; one that fails while its server still runs (network trouble: sshfs reconnects, a hard NFS
mount resumes) gets hang_grace seconds first, because a remount cuts off running engines. Each
remount is one log line; a failure that repeats unchanged is logged once. state() is what the
worker sends in its heartbeats.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any, Dict, Optional

from ..loops import Loop
from .base import ProjectStorage
from .config import StorageError

log = logging.getLogger(__name__)


class MountWatchdog:
    def __init__(self, storage: ProjectStorage, interval: float):
        self.storage = storage
        self.interval = interval
        self.mounted = False
        self.last_error = ""
        self.remounts = 0
        self.checked_at: Optional[str] = None
        self._logged_error = ""
        self._failing_since: Optional[float] = None
        self._was_mounted = False
        self._lock = threading.Lock()
        self._loop = Loop("storage-watchdog", lambda: self.check_once(), lambda: self.interval,
                          log=log, what="project storage check",
                          report=lambda e: log.exception("project storage check failed: %s", e))

    def check_once(self) -> bool:
        """Check the mount and remount it when needed; True when it is usable afterwards."""
        with self._lock:
            problem = self.storage.check()
            now = time.monotonic()
            if problem is None:
                self.mounted, self.last_error, self._failing_since = True, "", None
                self._was_mounted = True
            elif self.storage.may_recover() and \
                    now - (self._failing_since or now) < self.storage.config.hang_grace:
                self._failing_since = self._failing_since or now
                self.mounted, self.last_error = False, problem
                self._log_failure("%s storage at %s: %s; waiting up to %.0fs for it to recover"
                                  % (self.storage.name, self.storage.root, problem,
                                     self.storage.config.hang_grace))
            else:
                self._remount(problem)
                self._failing_since = None if self.mounted else now
            self.checked_at = dt.datetime.now(dt.timezone.utc).isoformat()
            return self.mounted

    def _remount(self, problem: str) -> None:
        where = "%s storage at %s" % (self.storage.name, self.storage.root)
        first = not self._was_mounted
        try:
            self.storage.remount()
        except (StorageError, OSError) as e:
            self.mounted, self.last_error = False, str(e)
            self._log_failure("%s: %s; %s failed: %s" % (where, problem,
                                                         "mount" if first else "remount", e))
            return
        self.mounted, self.last_error, self._logged_error = True, "", ""
        self._was_mounted = True
        if first:
            log.info("%s mounted", where)
        else:
            self.remounts += 1
            log.warning("%s was dropped (%s); remounted", where, problem)

    def _log_failure(self, line: str) -> None:
        if line != self._logged_error:
            log.warning("%s", line)
            self._logged_error = line

    def state(self) -> Dict[str, Any]:
        return {"backend": self.storage.name, "mounted": self.mounted,
                "last_error": self.last_error, "remounts": self.remounts,
                "checked_at": self.checked_at}

    @property
    def _thread(self) -> Optional[threading.Thread]:
        return self._loop.thread

    def start(self) -> "MountWatchdog":
        self._loop.start()
        return self

    def stop(self, release: bool = False) -> None:
        """Stop checking; with release, unmount too (the node leaves the cluster)."""
        self._loop.stop(self.storage.config.mount_timeout + self.storage.config.check_timeout)
        if release:
            with self._lock:
                try:
                    self.storage.release()
                except (StorageError, OSError) as e:
                    log.warning("cannot release %s storage: %s", self.storage.name, e)
                self.mounted = False
