"""Wrapper the local orchestrator starts for each workload: `python -m ... DIR`.

It runs the workload's command in its own session, writes started_at, waits, and writes the
exit code atomically, so a master that restarted can still tell how the workload ended. It
ignores SIGTERM (sent to the whole process group on stop) so that it outlives its child and
records the child's exit; SIGKILL of the group is the backstop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _default_signals() -> None:
    # an ignored signal stays ignored across exec; the workload must get SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_once(d: Path, spec: dict, log) -> int:  # type: ignore[no-untyped-def]
    env = dict(spec["env"])
    env.setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    try:
        child = subprocess.Popen(spec["command"], cwd=spec["cwd"], env=env,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 preexec_fn=_default_signals)
    except OSError as e:
        log.write(("cannot start %s: %s\n" % (spec["command"][0], e.strerror or e)).encode())
        return 127
    if not (d / "started_at").exists():
        write_atomic(d / "started_at", repr(time.time()))
    code = child.wait()
    # negative = killed by a signal; report it the way a shell (and Docker) does
    return 128 - code if code < 0 else code


def main(directory: str) -> int:
    d = Path(directory)
    spec = json.loads((d / "spec.json").read_text())
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
