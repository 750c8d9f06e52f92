"""Following one-shot workloads (job runs, experiment runs) to their final state.

What every kind of one-shot run shares, without any database: the orchestrator (created lazily,
so a master starts while Docker is still down), reading a workload's status (a workload that
vanished is lost), stopping and removing it, appending its new output to a log file, and the
final state a run gets from the workload's last status. The runners (jobs/runner.py,
experiments/runner.py) keep their own tables and call these.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Callable, Dict, Hashable, List, Optional, Tuple, Union

from ..orchestrators import (FAILED, LOST, PENDING, SUCCEEDED, WAITING_FOR_RESOURCES,
                             Orchestrator, OrchestratorError, WorkloadNotFound, WorkloadRef,
                             WorkloadSpec, WorkloadStatus)
from .engine import make_room

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 5.0
OrchestratorSource = Union[Orchestrator, Callable[[], Orchestrator]]


class LaunchError(Exception):
    """The run cannot start; str() is the run's one-line reason."""


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def start(orchestrator: Orchestrator, describe: Callable[[], WorkloadSpec],
          what: str) -> Tuple[Optional[WorkloadRef], str]:
    """Launch the workload describe() gives: (ref, "") or (None, the run's one-line reason).
    Any other exception is a bug: it is logged and ends the run, never leaves it queued."""
    try:
        return orchestrator.launch(describe()), ""
    except LaunchError as e:
        return None, str(e)
    except OrchestratorError as e:
        return None, "cannot start the engine: %s" % e
    except Exception:
        log.exception("cannot start %s", what)
        return None, "cannot start the run because of an internal error (the master's log " \
                     "has the details)"


def naive_utc(when: Optional[dt.datetime]) -> Optional[dt.datetime]:
    """A backend's aware time as the naive UTC the database holds."""
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def log_position(path: Path) -> Tuple[int, str]:
    """Complete lines in a log file, and the unfinished last line after them."""
    count, last = 0, b""
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                count += chunk.count(b"\n")
                last = (last + chunk).rsplit(b"\n", 1)[-1]
    except FileNotFoundError:
        pass
    return count, last.decode("utf-8", "replace")


def tail(path: Path, lines: int) -> List[str]:
    try:
        text = path.read_bytes()[-256 * 1024:].decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return text.splitlines()[-lines:]


def outcome(status: WorkloadStatus, stop_requested: Optional[str], stop_reason: str,
            timeout: Optional[dt.timedelta]) -> Tuple[str, str]:
    """(final run status, reason) for a workload's final status. `stop_requested` is why the
    master stopped it ("user" or "timeout"), which the backend only reports as a failure."""
    if status.state == SUCCEEDED:
        return "succeeded", ""
    if status.state == FAILED and stop_requested == "timeout":
        count = int(timeout.total_seconds() // 60) if timeout else 0
        return "timed_out", ("stopped: ran longer than its timeout of %d minute%s"
                             % (count, "" if count == 1 else "s"))
    if status.state == FAILED and stop_requested == "user":
        return "stopped", stop_reason or "stopped on request"
    if status.state == FAILED:
        return "failed", status.reason or "the engine failed"
    return "lost", status.reason or "the engine was lost"


class WorkloadFollower:
    """The orchestrator side of following one-shot runs; `key` names a run in the log state."""

    def __init__(self, orchestrator: OrchestratorSource):
        """`orchestrator` may be a factory: it is called (again after an OrchestratorError)
        when first needed."""
        self._orchestrator = orchestrator if isinstance(orchestrator, Orchestrator) else None
        self._factory = None if isinstance(orchestrator, Orchestrator) else orchestrator
        # run key -> (complete lines copied to its log, the unfinished line after them)
        self._log_state: Dict[Hashable, Tuple[int, str]] = {}

    @property
    def orchestrator(self) -> Orchestrator:
        if self._orchestrator is None:
            assert self._factory is not None
            self._orchestrator = self._factory()  # OrchestratorError when unreachable
        return self._orchestrator

    def status(self, workload_id: str, what: str) -> Optional[WorkloadStatus]:
        """The workload's status; LOST when it vanished; None when the backend cannot answer
        now (try again next tick). `what` names the run in the warning."""
        try:
            status = self.orchestrator.status(workload_id)
        except WorkloadNotFound:
            return WorkloadStatus(LOST, None, "the engine %s disappeared; its result is unknown"
                                  % workload_id)
        except OrchestratorError as e:
            log.warning("cannot read the status of %s: %s", what, e)
            return None
        if status.state == PENDING and status.reason == WAITING_FOR_RESOURCES:
            make_room()  # warm engines may hold what the run needs
        return status

    def stop(self, workload_id: str) -> None:
        try:
            self.orchestrator.stop(workload_id, timeout=STOP_GRACE_SECONDS)
        except OrchestratorError as e:  # gone already: the next poll records it
            log.warning("cannot stop workload %s: %s", workload_id, e)

    def remove(self, workload_id: str) -> None:
        try:
            self.orchestrator.remove(workload_id)
        except OrchestratorError as e:
            log.warning("cannot remove finished workload %s: %s", workload_id, e)

    def copy_logs(self, key: Hashable, workload_id: str, path: Path, final: bool) -> None:
        """Appends what is new to the run's log. The last line may still grow, so while the
        run lasts it is written without its newline and completed later."""
        done, partial = self._log_state.get(key) or log_position(path)
        try:
            lines = list(self.orchestrator.logs(workload_id))
        except OrchestratorError:
            return
        out: List[str] = []
        for i in range(done, len(lines)):
            line = lines[i]
            if i == done and partial:
                out.append(line[len(partial):] if line.startswith(partial) else "\n" + line)
            else:
                out.append(line)
            if i < len(lines) - 1 or final:
                out.append("\n")
        if final and partial and done >= len(lines):
            out.append("\n")
        if out:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(out))
        if final:
            self._log_state.pop(key, None)
        elif lines[done:]:
            self._log_state[key] = (len(lines) - 1, lines[-1])
        else:
            self._log_state[key] = (done, partial)
