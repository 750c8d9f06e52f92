"""Background loops: one small helper for every "do this every few seconds in a thread" of the
package (the master's control loops: job scheduler, session monitor, model supervisor, Kerberos
ticket keeper, Ambari Metrics sender; a node's storage watchdog and SFTP supervisor).

A `Loop` runs `step` in a daemon thread, `interval` seconds apart, until `stop()`:

- paced from the end of a step (the default), or from its start (`from_start`: a slow step does
  not make the schedule drift; a step that overruns starts the next one at once);
- `wake` may name an earlier moment (seconds from now, or None): the loop wakes then and runs
  `early` instead of `step` (the job scheduler wakes at a cron fire time, not a tick later);
- `delay_first`: wait one interval before the first step (a supervisor of something just
  started);
- a failed step never ends the loop: the exceptions in `quiet` (an orchestrator that is down)
  give one warning line "<what>: <error>", any other goes to `report` (by default the
  database-aware `log_loop_failure`: one line for an unreachable database, else the traceback);
  `on_error` then runs (a loop that must forget what the failed step learnt);
- `interval` may be a number or a callable read before every wait (tests change it live).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Tuple, Type, Union

MIN_WAIT_SECONDS = 0.01
Seconds = Union[float, Callable[[], float]]


class Loop:
    def __init__(self, name: str, step: Callable[[], None], interval: Seconds, *,
                 log: logging.Logger, what: str, failed: str = "",
                 quiet: Tuple[Type[BaseException], ...] = (),
                 report: Optional[Callable[[BaseException], None]] = None,
                 on_error: Optional[Callable[[], None]] = None, from_start: bool = False,
                 wake: Optional[Callable[[], Optional[float]]] = None,
                 early: Optional[Callable[[], None]] = None, delay_first: bool = False):
        self.name, self.step, self.log, self.what = name, step, log, what
        self.failed = failed or "%s tick failed" % what
        self.quiet, self.on_error = quiet, on_error
        self._report = report
        self._interval = interval
        self.from_start, self.wake, self.early = from_start, wake, early
        self.delay_first = delay_first
        self.thread: Optional[threading.Thread] = None  # the running (or last) thread
        self._stop = threading.Event()
        self._running = False

    @property
    def interval(self) -> float:
        return self._interval() if callable(self._interval) else self._interval

    @property
    def stopping(self) -> bool:
        """stop() was called on a running loop: a long step should return early."""
        return self._stop.is_set() and self._running

    def start(self) -> None:
        """Starts the thread (once: a running loop is left alone)."""
        if self._running:
            return
        # an event of its own per thread: a thread whose step outlived stop()'s timeout still
        # ends after that step, even when the loop has been started again meanwhile
        self._stop = threading.Event()
        self._running = True
        self.thread = threading.Thread(target=self._run, args=(self._stop,), name=self.name,
                                       daemon=True)
        self.thread.start()

    def stop(self, timeout: Optional[float] = 15.0) -> None:
        """Asks the loop to end and waits up to `timeout` seconds for its step to finish."""
        self._stop.set()
        if self._running and self.thread is not None:
            self.thread.join(timeout)
        self._running = False

    def _run(self, stop: threading.Event) -> None:
        if self.delay_first and stop.wait(self.interval):
            return
        next_step = time.monotonic()
        while not stop.is_set():
            if time.monotonic() >= next_step or self.early is None:
                started = time.monotonic()
                self.guarded(self.step)
                next_step = (started if self.from_start else time.monotonic()) + self.interval
            else:  # woken before the next step by `wake`
                self.guarded(self.early)
            stop.wait(self._wait(next_step))

    def _wait(self, next_step: float) -> float:
        wait = next_step - time.monotonic()
        if self.wake is not None:
            sooner = self.wake()
            if sooner is not None:
                wait = min(wait, sooner)
        return max(MIN_WAIT_SECONDS, wait)

    def guarded(self, step: Callable[[], None]) -> None:
        """Runs one step; whatever it raises is logged and the loop goes on."""
        try:
            step()
        except self.quiet as e:  # Docker down, ...: one line, try again next time
            self._failed()
            self.log.warning("%s: %s", self.what, e)
        except Exception as e:
            self._failed()
            if self._report is not None:
                self._report(e)
            else:
                from .store.db import log_loop_failure

                log_loop_failure(self.log, self.failed, e)

    def _failed(self) -> None:
        if self.on_error is not None:
            self.on_error()
