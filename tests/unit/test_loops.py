"""The background-loop helper (cdsw_agent/loops.py) that every control loop runs on, and the
layering it made possible: the domain packages do not import the server."""

from __future__ import annotations

import ast
import logging
import threading
import time
from pathlib import Path
from typing import List

import pytest

import cdsw_agent
from cdsw_agent.loops import Loop
from cdsw_agent.orchestrators import OrchestratorError

log = logging.getLogger("test.loops")


def _until(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_runs_every_interval_until_stopped_and_starts_once() -> None:
    ticks: List[float] = []
    loop = Loop("t-loop", lambda: ticks.append(time.monotonic()), 0.02, log=log, what="t")
    loop.start()
    first = loop.thread
    loop.start()  # already running: the same thread
    assert loop.thread is first and first is not None and first.name == "t-loop"
    _until(lambda: len(ticks) >= 3)
    loop.stop()
    assert not first.is_alive()
    count = len(ticks)
    time.sleep(0.1)
    assert len(ticks) == count  # nothing after stop
    loop.start()  # a stopped loop starts again
    _until(lambda: len(ticks) > count)
    loop.stop()


def test_a_failing_step_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: List[int] = []
    forgotten: List[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OrchestratorError("docker is down")
        if len(calls) == 2:
            raise ValueError("broken")

    caplog.set_level(logging.WARNING, logger="test.loops")
    loop = Loop("t-fail", step, 0.01, log=log, what="thing", quiet=(OrchestratorError,),
                on_error=lambda: forgotten.append(1))
    loop.start()
    _until(lambda: len(calls) >= 3)
    loop.stop()
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines[0] == ("WARNING", "thing: docker is down", False)
    assert lines[1] == ("ERROR", "thing tick failed", True)  # not quiet: the traceback
    assert len(forgotten) == 2


def test_report_replaces_the_default_failure_line() -> None:
    seen: List[str] = []

    def step() -> None:
        raise RuntimeError("surprise")

    loop = Loop("t-report", step, 0.01, log=log, what="x", report=lambda e: seen.append(str(e)))
    loop.start()
    _until(lambda: len(seen) >= 2)
    loop.stop()
    assert set(seen) == {"surprise"}


def test_from_start_paces_from_the_start_of_a_step() -> None:
    """A step of 0.3 s every 0.4 s: paced from its start, steps begin 0.4 s apart; paced from
    its end (the default), 0.7 s apart."""
    gaps = {}
    for from_start in (True, False):
        starts: List[float] = []

        def step() -> None:
            starts.append(time.monotonic())
            time.sleep(0.3)

        loop = Loop("t-pace", step, 0.4, log=log, what="t", from_start=from_start)
        loop.start()
        _until(lambda: len(starts) >= 4)
        loop.stop()
        gaps[from_start] = sorted(b - a for a, b in zip(starts, starts[1:]))
    assert 0.39 <= gaps[True][0] and gaps[True][1] <= 0.62, gaps
    assert gaps[False][0] >= 0.69, gaps


def test_wake_runs_early_before_the_next_step() -> None:
    steps: List[float] = []
    early: List[float] = []
    fire = [time.monotonic() + 0.2]

    def until_fire() -> float:
        return fire[0] - time.monotonic() if not early else None  # type: ignore[return-value]

    started = time.monotonic()
    loop = Loop("t-wake", lambda: steps.append(time.monotonic()), 60.0, log=log, what="t",
                wake=until_fire, early=lambda: early.append(time.monotonic()))
    loop.start()
    _until(lambda: bool(early))
    loop.stop()
    assert len(steps) == 1  # the first step, then the next is a minute away
    assert 0.19 <= early[0] - started < 5.0


def test_interval_is_read_before_every_wait_and_delay_first_waits_once() -> None:
    interval = [60.0]
    ran = threading.Event()
    loop = Loop("t-delay", ran.set, lambda: interval[0], log=log, what="t", delay_first=True)
    loop.start()
    time.sleep(0.1)
    assert not ran.is_set()  # waiting its first interval
    loop.stop(timeout=5)
    assert not loop.thread.is_alive()  # type: ignore[union-attr]
    interval[0] = 0.01
    loop.start()
    assert ran.wait(5)
    loop.stop()


def test_stopping_tells_a_long_step_to_return() -> None:
    seen: List[bool] = []
    inside = threading.Event()

    def step() -> None:
        inside.set()
        deadline = time.monotonic() + 10
        while not loop.stopping and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(loop.stopping)

    loop = Loop("t-stopping", step, 60.0, log=log, what="t")
    assert not loop.stopping
    loop.start()
    assert inside.wait(5)
    loop.stop()
    assert seen == [True] and not loop.stopping


def test_a_step_that_outlives_stop_ends_its_thread_even_after_a_restart() -> None:
    release = threading.Event()
    threads: List[str] = []

    def step() -> None:
        threads.append(threading.current_thread().ident)  # type: ignore[arg-type]
        release.wait(10)

    loop = Loop("t-overrun", step, 0.01, log=log, what="t")
    loop.start()
    _until(lambda: bool(threads))
    old = loop.thread
    loop.stop(timeout=0.05)  # the step is still running
    assert old is not None and old.is_alive()
    loop.start()
    release.set()
    old.join(5)
    assert not old.is_alive()  # it ended after its step instead of looping on
    _until(lambda: loop.thread is not None and threads[-1] == loop.thread.ident)
    loop.stop()
    assert set(threads) <= {old.ident, loop.thread.ident}  # type: ignore[union-attr]


DOMAIN = ("models", "sessions", "jobs")


@pytest.mark.parametrize("package", DOMAIN)
def test_domain_packages_do_not_import_the_server(package: str) -> None:
    """models/, sessions/ and jobs/ are used by the server, never the other way round."""
    root = Path(cdsw_agent.__file__).parent
    offenders = []
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else \
                    [("." * node.level) + (node.module or "")]
                if node.level and not node.module:
                    names = ["." * node.level + a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("cdsw_agent.server") or name.startswith("..server") \
                        or name == "..server" or name.startswith("...server"):
                    offenders.append("%s:%d %s" % (path.relative_to(root), node.lineno, name))
    assert not offenders, offenders
