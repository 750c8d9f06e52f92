"""Visible progress for long builds: step lines with elapsed times, and commands whose output goes
to a log file while a heartbeat line says they are still running."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from ..errors import UserError

Echo = Callable[[str], None]


class Progress:
    """Prints `[ 12.3s] step ...` lines through `echo`; safe to use from several threads."""

    def __init__(self, echo: Optional[Echo] = None, clock: Callable[[], float] = time.monotonic):
        self._echo = echo or (lambda line: None)
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self.timings: Dict[str, float] = {}

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    def say(self, message: str) -> None:
        with self._lock:
            self._echo("[%6.1fs] %s" % (self.elapsed, message))

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        """Announces a step, then says how long it took (or that it failed)."""
        self.say("%s%s ..." % (name, ": " + detail if detail else ""))
        began = self._clock()
        try:
            yield
        except BaseException:
            self.say("%s failed after %.1fs" % (name, self._clock() - began))
            raise
        took = self._clock() - began
        self.timings[name] = took
        self.say("%s done in %.1fs" % (name, took))


def run_logged(cmd: Sequence[str], log: Path, progress: Progress, label: str,
               env: Optional[Mapping[str, str]] = None, heartbeat: float = 15.0,
               what: str = "") -> None:
    """Runs cmd with its output appended to `log`; every `heartbeat` seconds says it is still
    running with the command's last output line. Raises UserError with the tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(("$ %s\n" % " ".join(cmd)).encode())
        out.flush()
        try:
            proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None)
        except FileNotFoundError:
            raise UserError("%s: %s not found" % (label, cmd[0]))
        began = time.monotonic()
        while True:
            try:
                rc = proc.wait(timeout=heartbeat)
                break
            except subprocess.TimeoutExpired:
                progress.say("  %s still running (%.0fs): %s"
                             % (label, time.monotonic() - began, last_line(log)[:120]))
            except BaseException:  # interrupted: let the command clean up (debootstrap unmounts)
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
    if rc != 0:
        raise UserError("%s failed (exit %d): %s; full log in %s"
                        % (what or label, rc, last_line(log, error_first=True)[:300], log))


def last_line(path: Path, error_first: bool = False) -> str:
    """The last non-empty line of a log (or its last error-looking line), read from its tail."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines: List[str] = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    if error_first:
        for ln in reversed(lines):
            if ln.startswith(("E:", "ERROR", "error:")) or "Error" in ln or "failed" in ln.lower():
                return ln
    return lines[-1] if lines else ""
