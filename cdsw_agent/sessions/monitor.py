"""The master's session loop: every few seconds it follows every active session (readiness,
engine crashes, idle and maximum-duration timeouts); its first tick, then one every
ORPHAN_CHECK_SECONDS, also sweeps engines and folders no session owns (manager.remove_orphans).
One manager per server state."""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from ..loops import Loop
from ..orchestrators import OrchestratorError, shared_orchestrator
from .manager import Clock, SessionManager

log = logging.getLogger(__name__)
MANAGER_KEY, MONITOR_KEY = "sessions.manager", "sessions.monitor"
DEFAULT_INTERVAL = 3.0
_create_lock = threading.Lock()


def manager_for(state: Any, clock: Optional[Clock] = None) -> SessionManager:
    """This server's session manager (created on first use; shares the jobs' orchestrator)."""
    with _create_lock:
        manager = state.extras.get(MANAGER_KEY)
        if manager is None:
            kwargs = {"clock": clock} if clock is not None else {}
            manager = state.extras[MANAGER_KEY] = SessionManager(
                state.db, state.settings, lambda: shared_orchestrator(state), **kwargs)
        return manager


class Monitor:
    def __init__(self, manager: SessionManager, interval: float = DEFAULT_INTERVAL):
        self.manager, self.interval = manager, interval
        self._loop = Loop("cdsw-sessions", lambda: self.manager.sync(), lambda: self.interval,
                          log=log, what="session monitor", quiet=(OrchestratorError,))

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._loop.stop(timeout)


def start(state: Any, interval: float = DEFAULT_INTERVAL) -> Monitor:
    monitor = state.extras.get(MONITOR_KEY)
    if monitor is None:
        monitor = state.extras[MONITOR_KEY] = Monitor(manager_for(state), interval)
    monitor.start()
    return monitor


def stop(state: Any) -> None:
    """Stops the loop and removes the warm engines; sessions keep running and are re-adopted
    by the next master."""
    monitor = state.extras.pop(MONITOR_KEY, None)
    if monitor is not None:
        monitor.stop()
        monitor.manager.warm.clear()  # nobody's engines: a next master would remove them
