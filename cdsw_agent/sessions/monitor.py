"""The master's session loop: every few seconds it follows every active session (readiness,
engine crashes, idle and maximum-duration timeouts); its first tick, then one every
ORPHAN_CHECK_SECONDS, also sweeps engines and folders no session owns (manager.remove_orphans).
One manager per server state."""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from ..orchestrators import OrchestratorError
from ..store.db import log_loop_failure
from .manager import Clock, SessionManager

log = logging.getLogger(__name__)
MANAGER_KEY, MONITOR_KEY = "sessions.manager", "sessions.monitor"
DEFAULT_INTERVAL = 3.0
_create_lock = threading.Lock()


def manager_for(state: Any, clock: Optional[Clock] = None) -> SessionManager:
    """This server's session manager (created on first use; shares the jobs' orchestrator)."""
    from ..server.scheduler import _orchestrator  # the one orchestrator client of the server

    with _create_lock:
        manager = state.extras.get(MANAGER_KEY)
        if manager is None:
            kwargs = {"clock": clock} if clock is not None else {}
            manager = state.extras[MANAGER_KEY] = SessionManager(
                state.db, state.settings, lambda: _orchestrator(state), **kwargs)
        return manager


class Monitor:
    def __init__(self, manager: SessionManager, interval: float = DEFAULT_INTERVAL):
        self.manager, self.interval = manager, interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="cdsw-sessions", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.manager.sync()
            except OrchestratorError as e:
                log.warning("session monitor: %s", e)
            except Exception as e:  # a bad tick (database down, ...) must not end the loop
                log_loop_failure(log, "session monitor tick failed", e)
            self._stop.wait(self.interval)


def start(state: Any, interval: float = DEFAULT_INTERVAL) -> Monitor:
    monitor = state.extras.get(MONITOR_KEY)
    if monitor is None:
        monitor = state.extras[MONITOR_KEY] = Monitor(manager_for(state), interval)
    monitor.start()
    return monitor


def stop(state: Any) -> None:
    """Stops the loop; sessions keep running and are re-adopted by the next master."""
    monitor = state.extras.pop(MONITOR_KEY, None)
    if monitor is not None:
        monitor.stop()
