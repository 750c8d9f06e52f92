"""Wrapper the local orchestrator starts for each workload: `python -m ... DIR`.

It runs the workload's command in its own session, writes started_at, waits, and writes the
exit code atomically, so a master that restarted can still tell how the workload ended. It
ignores SIGTERM (sent to the whole process group on stop) so that it outlives its child and
records the child's exit; SIGKILL of the group is the backstop.

As a container's end ends everything in it, the workload's end ends everything it started:
the runner is a child subreaper, so a process the workload started that left its process group
(jupyter_client starts every kernel in a session of its own; `setsid`, daemons) is re-parented
to the runner when its parent dies, and the runner stops whatever is left once the command
ended. Every process of the workload also inherits WORKLOAD_VARIABLE, by which the local
orchestrator finds them when the runner itself is gone.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

# set in every process of a workload to its id (the orchestrator's marker, see local.py)
WORKLOAD_VARIABLE = "CDSW_LOCAL_WORKLOAD"
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
LEFTOVER_GRACE_SECONDS = 2.0


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _default_signals() -> None:
    # an ignored signal stays ignored across exec; the workload must get SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def become_subreaper() -> bool:
    """Orphans of the workload's processes are re-parented to this process (Linux 3.4+)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children() -> List[int]:
    """Live processes whose parent is this one (zombies are reaped, not counted)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open("/proc/%s/stat" % entry).read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(entry))
    return found


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def end_leftovers(grace: float = LEFTOVER_GRACE_SECONDS) -> None:
    """SIGTERM what the workload left running (re-parented here), SIGKILL it after `grace`;
    a process's own children come here as it dies and get the same."""
    deadline = time.monotonic() + grace
    signalled: set = set()
    while True:
        reap()
        left = children()
        if not left:
            return
        late = time.monotonic() >= deadline
        for pid in left:
            if late or pid not in signalled:
                try:
                    os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
                except ProcessLookupError:
                    pass
                signalled.add(pid)
        time.sleep(0.02)


def wait_for(child: subprocess.Popen) -> int:
    """The child's exit code; orphans re-parented here meanwhile are reaped as they end."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # already reaped elsewhere
            return child.wait()
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode


def run_once(d: Path, spec: dict, log) -> int:  # type: ignore[no-untyped-def]
    env = dict(spec["env"])
    env.setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    env[WORKLOAD_VARIABLE] = d.name
    try:
        child = subprocess.Popen(spec["command"], cwd=spec["cwd"], env=env,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 preexec_fn=_default_signals)
    except OSError as e:
        log.write(("cannot start %s: %s\n" % (spec["command"][0], e.strerror or e)).encode())
        return 127
    if not (d / "started_at").exists():
        write_atomic(d / "started_at", repr(time.time()))
    code = wait_for(child)
    end_leftovers()
    # negative = killed by a signal; report it the way a shell (and Docker) does
    return 128 - code if code < 0 else code


def main(directory: str) -> int:
    d = Path(directory)
    spec = json.loads((d / "spec.json").read_text())
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    become_subreaper()
    restarts = 0
    with open(d / "output.log", "ab", buffering=0) as log:
        while True:
            code = run_once(d, spec, log)
            done = spec["restart"] == "never" or (spec["restart"] == "on-failure" and code == 0)
            if done or (d / "stopped").exists():
                break
            restarts += 1
            write_atomic(d / "restarts", str(restarts))
            time.sleep(min(30.0, 0.5 * restarts))  # back off a crash loop
            if (d / "stopped").exists():
                break
    write_atomic(d / "exit_code", str(code))
    write_atomic(d / "finished_at", repr(time.time()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
