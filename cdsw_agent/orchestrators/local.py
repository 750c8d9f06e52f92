"""`local` backend: workloads are plain processes on this host (laptops and fast tests).

No isolation: the image is ignored, mounts only choose the working directory (the mount whose
target is the workload's workdir runs there), and limits are not enforced. Each workload has a
directory under DATA_DIR/orchestrator/local/ID holding its spec, log, the runner's pid and
process group and, once it ended, its exit code, so a new instance (a restarted master) re-adopts
running workloads. When the runner is gone (killed, host trouble) the workload is lost: whatever
is left of it is killed, so no engine of a lost workload writes on unseen. What is left of a
workload is its process group and every process carrying its marker variable (local_runner):
a kernel runs in a session of its own and would otherwise escape.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .base import (
    FAILED,
    LOST,
    PENDING,
    RUNNING,
    STOPPED_REASON,
    SUCCEEDED,
    Node,
    Orchestrator,
    OrchestratorError,
    WorkloadNotFound,
    WorkloadRef,
    WorkloadSpec,
    WorkloadStatus,
)
from .local_runner import WORKLOAD_VARIABLE, write_atomic
from .reasons import exit_reason

RUNNER_GONE = "the workload's runner process disappeared (host reboot or killed)"


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _time(path: Path) -> Optional[dt.datetime]:
    text = _read(path)
    return dt.datetime.fromtimestamp(float(text), dt.timezone.utc) if text else None


def _process_start(pid: int) -> Optional[str]:
    """Start time of a live, non-zombie process (field 22 of /proc/PID/stat), else None."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _stat(pid: int) -> Optional[Tuple[str, int]]:
    """(state, process group) of a process, or None when it is gone."""
    try:
        fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2])


def group_members(pgid: int) -> List[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z" and st[1] == pgid:
                members.append(int(entry))
    return members


def marked(workload_id: str) -> List[int]:
    """Live processes started in the workload (its marker variable in their environment at
    start), wherever they went: another session, re-parented to init."""
    mark = ("%s=%s" % (WORKLOAD_VARIABLE, workload_id)).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                environ = b"\0" + f.read()
        except OSError:  # gone, or another user's
            continue
        if b"\0" + mark in environ:
            st = _stat(int(entry))
            if st is not None and st[0] != "Z":
                found.append(int(entry))
    return found


def workload_members(pgid: int, workload_id: str) -> List[int]:
    """The live processes of a workload: its process group (0: none) and its marked ones."""
    return sorted(set(group_members(pgid) if pgid else []) | set(marked(workload_id)))


def kill_workload(pgid: int, workload_id: str, timeout: float) -> None:
    """SIGTERM to the workload's processes, SIGKILL to what is left after `timeout`; waits for
    the end."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        if not wait and sig == signal.SIGTERM:
            continue
        members = workload_members(pgid, workload_id)
        if not members:
            return
        if pgid:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        for pid in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not workload_members(pgid, workload_id):
                return
            time.sleep(0.02)


def memory_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


class LocalOrchestrator(Orchestrator):
    name = "local"

    def __init__(self, state_dir: Path):
        self.root = Path(state_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self._children: Dict[str, subprocess.Popen] = {}  # reaped here so they never linger as zombies

    # --- helpers
    def _dir(self, workload_id: str) -> Path:
        d = self.root / workload_id
        if not workload_id or "/" in workload_id or not (d / "spec.json").exists():
            raise WorkloadNotFound("no workload %s" % workload_id)
        return d

    def _spec(self, d: Path) -> dict:
        return json.loads((d / "spec.json").read_text())

    def _alive(self, d: Path) -> bool:
        child = self._children.get(d.name)
        if child is not None:
            child.poll()
        pid, start = _read(d / "pid"), _read(d / "pid_start")
        return pid is not None and pid.isdigit() and _process_start(int(pid)) == start  # pid reuse

    # --- interface
    def launch(self, spec: WorkloadSpec) -> WorkloadRef:
        spec.validate()
        workload_id = "%s-%s" % (spec.name, secrets.token_hex(4))
        try:
            return self._launch(spec, workload_id)
        except OSError as e:  # disk full, no more processes...: no half-made workload stays
            shutil.rmtree(self.root / workload_id, ignore_errors=True)
            raise OrchestratorError("this host cannot start the engine process: %s"
                                    % (e.strerror or type(e).__name__))

    def _launch(self, spec: WorkloadSpec, workload_id: str) -> WorkloadRef:
        d = self.root / workload_id
        d.mkdir(parents=True)
        cwd = next((m.source for m in spec.mounts if m.target == spec.workdir), None) \
            or (spec.workdir if spec.workdir and os.path.isdir(spec.workdir) else str(d))
        record = dict(asdict(spec), cwd=cwd, labels=spec.all_labels())
        (d / "spec.json").write_text(json.dumps(record))
        (d / "output.log").touch()
        # a new session: the runner outlives this process and is stopped as a process group
        child = subprocess.Popen([sys.executable, "-m", "cdsw_agent.orchestrators.local_runner",
                                  str(d)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        self._children[workload_id] = child
        (d / "pid").write_text(str(child.pid))
        (d / "pid_start").write_text(_process_start(child.pid) or "")
        # the runner leads its own group; the engine and all it starts stay in it, also
        # when the runner dies (they are re-parented to init): the group is what gets killed
        (d / "pgid").write_text(str(os.getpgid(child.pid)))
        return WorkloadRef(workload_id, spec.name)

    def _group(self, d: Path) -> int:
        """The workload's process group, or 0 when no process of it can be left in it."""
        text = _read(d / "pgid") or _read(d / "pid") or ""
        if not text.isdigit():
            return 0
        pgid = int(text)
        leader = _process_start(pgid)
        if leader is not None and leader != _read(d / "pid_start"):
            # the number now names another process: Linux reuses a pid only once no process
            # is left in the group of that number, so ours ended
            return 0
        return pgid

    def _orphans(self, d: Path) -> bool:
        """Whether any process of the workload is left."""
        return bool(workload_members(self._group(d), d.name))

    def stop(self, workload_id: str, timeout: float = 10.0) -> None:
        d = self._dir(workload_id)
        grace = timeout
        if _read(d / "exit_code") is None:
            (d / "stopped").touch()
            if self._alive(d):
                self._stop_runner(d, timeout)
                grace = 0.5
        # what is left of the group: an engine whose runner died, a kernel still shutting
        # down, anything the engine started in the background
        kill_workload(self._group(d), d.name, grace)

    def _stop_runner(self, d: Path, timeout: float) -> None:
        pid = int(_read(d / "pid") or 0)
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive(d) and _read(d / "exit_code") is None:
            time.sleep(0.05)
        if self._alive(d) and _read(d / "exit_code") is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(100):
                if not self._alive(d):
                    break
                time.sleep(0.02)

    def remove(self, workload_id: str) -> None:
        self.stop(workload_id, timeout=2.0)
        shutil.rmtree(self.root / workload_id, ignore_errors=True)
        self._children.pop(workload_id, None)

    def status(self, workload_id: str) -> WorkloadStatus:
        d = self._dir(workload_id)
        stopped = (d / "stopped").exists()
        started, finished = _time(d / "started_at"), _time(d / "finished_at")
        base: Dict[str, Any] = dict(node=socket.gethostname(), started_at=started, finished_at=finished)
        code = _read(d / "exit_code")
        if code is not None:
            exit_code = int(code)
            if stopped:
                return WorkloadStatus(FAILED, exit_code, STOPPED_REASON, **base)
            if exit_code == 0:
                return WorkloadStatus(SUCCEEDED, 0, **base)
            return WorkloadStatus(FAILED, exit_code, exit_reason(exit_code), **base)
        if self._alive(d) or _read(d / "pid") is None:  # no pid yet: launch() is under way
            return WorkloadStatus(RUNNING if started else PENDING, **base)
        if _read(d / "exit_code") is not None:  # the runner recorded the end, then exited
            return self.status(workload_id)
        if stopped:  # killed with SIGKILL before it could record anything
            return WorkloadStatus(FAILED, None, STOPPED_REASON, **base)
        return WorkloadStatus(LOST, None, self._lost(d), **base)

    def _lost(self, d: Path) -> str:
        """The runner is gone, so the engine's result can never be known: the workload is
        lost, and an engine that outlived its runner is killed before anyone is told so."""
        reason = _read(d / "lost")
        if reason is None:
            orphans = self._orphans(d)
            if orphans:
                kill_workload(self._group(d), d.name, 2.0)
            reason = RUNNER_GONE + ("; its engine was stopped" if orphans else "")
            try:
                write_atomic(d / "lost", reason)
            except OSError:  # another thread wrote it meanwhile, or the workload was removed
                pass
        return reason

    def logs(self, workload_id: str, follow: bool = False) -> Iterator[str]:
        d = self._dir(workload_id)
        with open(d / "output.log", "rb") as f:
            pending = b""
            while True:
                chunk = f.read(65536)
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", "replace")
                    continue
                if not follow or self.status(workload_id).final:
                    rest = f.read()
                    pending += rest
                    if rest:
                        continue
                    break
                time.sleep(0.1)
            if pending:
                yield pending.decode("utf-8", "replace")

    def list(self, labels: Optional[Dict[str, str]] = None) -> List[WorkloadRef]:
        out = []
        for d in sorted(self.root.iterdir()):
            try:
                spec = self._spec(d)
            except (OSError, ValueError):
                continue  # half-written by a concurrent launch, or removed meanwhile
            if all(spec["labels"].get(k) == v for k, v in (labels or {}).items()):
                out.append(WorkloadRef(d.name, spec["name"]))
        return out

    def nodes(self) -> List[Node]:
        cpu, mem = 0.0, 0
        for ref in self.list():
            try:
                if self.status(ref.id).state in (PENDING, RUNNING):
                    spec = self._spec(self.root / ref.id)
                    cpu += spec["cpu_reservation"]
                    mem += spec["memory_reservation"]
            except (WorkloadNotFound, OSError, ValueError):
                continue
        return [Node(name=socket.gethostname(), address="127.0.0.1", state="ready",
                     cpu_capacity=float(os.cpu_count() or 1), memory_capacity=memory_total(),
                     cpu_allocated=cpu, memory_allocated=mem, role="manager", id="local")]
