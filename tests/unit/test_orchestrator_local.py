"""The local orchestrator: real processes, state on disk, no Docker."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from cdsw_agent.errors import UserError
from cdsw_agent.orchestrators import (
    FAILED,
    LOST,
    RUNNING,
    SUCCEEDED,
    Mount,
    OrchestratorError,
    WorkloadNotFound,
    WorkloadSpec,
    get_orchestrator,
)
from cdsw_agent.orchestrators.base import split_lines
from cdsw_agent.orchestrators.local import LocalOrchestrator, group_members
from cdsw_agent.orchestrators.reasons import exit_reason, memory_text
from cdsw_agent.settings import load_settings

PY = sys.executable


def wait_final(orch, wid, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = orch.status(wid)
        if st.final:
            return st
        time.sleep(0.05)
    raise AssertionError("workload %s still %s" % (wid, st.state))


def wait_state(orch, wid, state, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if orch.status(wid).state == state:
            return
        time.sleep(0.05)
    raise AssertionError("workload %s never became %s" % (wid, state))


@pytest.fixture
def orch(tmp_path: Path):
    o = LocalOrchestrator(tmp_path / "state")
    yield o
    for ref in o.list():
        o.remove(ref.id)


def spec(name, code, **kw):
    return WorkloadSpec(name=name, image="ignored", command=[PY, "-c", code], **kw)


def test_factory_selects_local_backend(tmp_path):
    settings = load_settings(environ={}, overrides={"orchestrator": "local",
                                                     "data_dir": str(tmp_path)})
    o = get_orchestrator(settings)
    assert isinstance(o, LocalOrchestrator)
    assert o.root == tmp_path / "orchestrator" / "local"


def test_factory_rejects_unknown_backend():
    class S:
        orchestrator = "nomad"
    with pytest.raises(UserError, match="unknown orchestrator"):
        get_orchestrator(S())


def test_one_shot_succeeds_with_env_cwd_and_logs(orch, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    code = "import os; print('hello', os.environ['GREETING']); print(os.getcwd())"
    ref = orch.launch(spec("job1", code, env={"GREETING": "world"}, workdir="/home/cdsw",
                           mounts=[Mount(str(project), "/home/cdsw")]))
    st = wait_final(orch, ref.id)
    assert (st.state, st.exit_code) == (SUCCEEDED, 0)
    assert st.started_at is not None and st.finished_at >= st.started_at
    assert list(orch.logs(ref.id)) == ["hello world", str(project)]


def test_failure_reports_exit_code_and_stderr(orch):
    ref = orch.launch(spec("bad", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"))
    st = wait_final(orch, ref.id)
    assert (st.state, st.exit_code) == (FAILED, 3)
    assert "boom" in list(orch.logs(ref.id))


def test_missing_executable_fails_with_127(orch):
    ref = orch.launch(WorkloadSpec(name="nope", image="x", command=["/nonexistent/cmd"]))
    st = wait_final(orch, ref.id)
    assert (st.state, st.exit_code) == (FAILED, 127)


def test_stop_uses_sigterm_then_sigkill(orch):
    graceful = orch.launch(spec("graceful", "import time\nprint('up', flush=True)\n"
                                "time.sleep(60)"))
    stubborn = orch.launch(spec("stubborn", "import signal, time\n"
                                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                "print('up', flush=True)\ntime.sleep(60)"))
    for ref in (graceful, stubborn):
        wait_state(orch, ref.id, RUNNING)
        deadline = time.monotonic() + 10
        while "up" not in list(orch.logs(ref.id)) and time.monotonic() < deadline:
            time.sleep(0.05)
    orch.stop(graceful.id, timeout=5)
    st = orch.status(graceful.id)
    assert (st.state, st.reason, st.exit_code) == (FAILED, "stopped", 143)  # 128 + SIGTERM
    t0 = time.monotonic()
    orch.stop(stubborn.id, timeout=0.5)
    assert time.monotonic() - t0 < 5
    st = orch.status(stubborn.id)
    assert (st.state, st.reason) == (FAILED, "stopped")


def test_new_instance_readopts_running_workload(orch):
    ref = orch.launch(spec("long", "import time\nprint('tick', flush=True)\ntime.sleep(60)"))
    wait_state(orch, ref.id, RUNNING)
    again = LocalOrchestrator(orch.root)  # as after a master restart
    assert again.status(ref.id).state == RUNNING
    assert [r.id for r in again.list()] == [ref.id]
    again.stop(ref.id, timeout=5)
    assert again.status(ref.id).state == FAILED
    assert orch.status(ref.id).reason == "stopped"


def test_runner_killed_means_lost(orch):
    ref = orch.launch(spec("victim", "import time; time.sleep(60)"))
    wait_state(orch, ref.id, RUNNING)
    pid = int((orch.root / ref.id / "pid").read_text())
    os.killpg(pid, 9)
    orch._children[ref.id].wait()
    st = orch.status(ref.id)
    assert st.state == LOST and "disappeared" in st.reason


def _engine_that_writes_later(orch, tmp_path, name):
    """A workload whose engine writes a file 2 s after it started, like a run that is about
    to write into its project."""
    marker = tmp_path / (name + ".written")
    ref = orch.launch(spec(name, "import time\nprint('up', flush=True)\ntime.sleep(2)\n"
                                 "open(%r, 'w').write('late')" % str(marker)))
    wait_state(orch, ref.id, RUNNING)
    deadline = time.monotonic() + 10
    while "up" not in list(orch.logs(ref.id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    pgid = int((orch.root / ref.id / "pid").read_text())  # the runner leads its group
    os.kill(pgid, 9)  # the runner only, not its group
    orch._children[ref.id].wait()
    assert group_members(pgid), "the engine outlives its runner, re-parented to init"
    return ref, marker, pgid


def test_lost_workload_engine_is_killed_when_status_says_lost(orch, tmp_path):
    ref, marker, pgid = _engine_that_writes_later(orch, tmp_path, "orphan")
    st = orch.status(ref.id)
    assert st.state == LOST and st.reason.endswith("its engine was stopped"), st
    assert group_members(pgid) == []
    time.sleep(2.5)
    assert not marker.exists(), "the engine of a lost workload wrote after it was declared lost"
    assert orch.status(ref.id).reason == st.reason  # stays the same on every later read


def test_removing_a_lost_workload_kills_its_engine(orch, tmp_path):
    ref, marker, pgid = _engine_that_writes_later(orch, tmp_path, "orphan2")
    orch.remove(ref.id)  # what the runners do with a final workload, status never read
    assert group_members(pgid) == []
    time.sleep(2.5)
    assert not marker.exists()


def test_reasons_name_the_signal():
    assert exit_reason(3) == "exit code 3"
    assert exit_reason(137) == "killed by SIGKILL"
    assert exit_reason(143) == "terminated by SIGTERM"
    assert exit_reason(130) == "interrupted by SIGINT"
    assert exit_reason(139) == "killed by SIGSEGV"
    assert exit_reason(137, oom=True, memory_limit=2 << 30) == (
        "killed by SIGKILL (out of memory: the engine used more than its 2 GiB profile; "
        "choose a larger profile)")
    assert exit_reason(137, oom=None, memory_limit=3 << 29).startswith(
        "killed by SIGKILL (probably out of memory: the engine may have used more than its "
        "1.5 GiB profile")
    assert exit_reason(137, oom=None) == "killed by SIGKILL"  # no limit: no guess
    assert memory_text(512 << 20) == "512 MiB"


def test_engine_killed_by_a_signal_says_which(orch):
    ref = orch.launch(spec("selfkill", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    st = wait_final(orch, ref.id)
    assert (st.state, st.exit_code, st.reason) == (FAILED, 137, "killed by SIGKILL")


def test_restart_on_failure_restarts_until_success(orch, tmp_path):
    counter = tmp_path / "count"
    code = ("import pathlib, sys\np = pathlib.Path(%r)\nn = int(p.read_text()) if p.exists() else 0\n"
            "p.write_text(str(n + 1))\nprint('attempt', n + 1)\nsys.exit(0 if n >= 1 else 1)"
            % str(counter))
    ref = orch.launch(spec("flaky", code, restart="on-failure"))
    st = wait_final(orch, ref.id)
    assert (st.state, st.exit_code) == (SUCCEEDED, 0)
    assert list(orch.logs(ref.id)) == ["attempt 1", "attempt 2"]


def test_follow_logs_streams_until_end(orch):
    ref = orch.launch(spec("stream", "import time\nfor i in range(3):\n"
                           "    print('line', i, flush=True); time.sleep(0.2)"))
    assert list(orch.logs(ref.id, follow=True)) == ["line 0", "line 1", "line 2"]
    assert orch.status(ref.id).state == SUCCEEDED


def test_list_filters_by_labels_and_remove_forgets(orch):
    a = orch.launch(spec("a", "pass", labels={"project": "p1", "kind": "job"}))
    b = orch.launch(spec("b", "pass", labels={"project": "p2", "kind": "job"}))
    assert {r.id for r in orch.list({"kind": "job"})} == {a.id, b.id}
    assert [r.id for r in orch.list({"project": "p2"})] == [b.id]
    wait_final(orch, a.id)
    orch.remove(a.id)
    with pytest.raises(WorkloadNotFound):
        orch.status(a.id)
    assert [r.id for r in orch.list()] == [b.id]


def test_nodes_sum_reservations_of_running_workloads(orch):
    ref = orch.launch(spec("res", "import time; time.sleep(60)", cpu_reservation=0.5,
                           memory_reservation=256 << 20))
    done = orch.launch(spec("done", "pass", cpu_reservation=1.0))
    wait_state(orch, ref.id, RUNNING)
    wait_final(orch, done.id)
    (node,) = orch.nodes()
    assert node.state == "ready" and node.cpu_capacity >= 1 and node.memory_capacity > 0
    assert (node.cpu_allocated, node.memory_allocated) == (0.5, 256 << 20)


@pytest.mark.parametrize("bad, message", [
    (dict(name="bad name"), "workload name"),
    (dict(command=[]), "no command"),
    (dict(restart="sometimes"), "restart must be"),
    (dict(cpu_reservation=2, cpu_limit=1), "cpu reservation"),
    (dict(memory_reservation=2, memory_limit=1), "memory reservation"),
    (dict(mounts=[Mount("/tmp", "relative")]), "must be absolute"),
])
def test_invalid_spec_rejected_without_leftovers(orch, bad, message):
    fields = dict(name="ok", image="x", command=["true"])
    fields.update(bad)
    with pytest.raises(OrchestratorError, match=message):
        orch.launch(WorkloadSpec(**fields))
    assert orch.list() == []


def test_unknown_id_is_not_found(orch):
    for call in (orch.status, orch.stop, lambda i: list(orch.logs(i))):
        with pytest.raises(WorkloadNotFound):
            call("missing")
    with pytest.raises(WorkloadNotFound):
        orch.status("../etc")


def test_split_lines_rejoins_chunks():
    assert list(split_lines(iter([b"ab", b"c\nd", b"e\r\n", b"f"]))) == ["abc", "de", "f"]


def test_stop_ends_a_restarting_workload(orch):
    ref = orch.launch(spec("crashloop", "print('run', flush=True); raise SystemExit(1)",
                           restart="always"))
    deadline = time.monotonic() + 15
    while list(orch.logs(ref.id)).count("run") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(orch.logs(ref.id)).count("run") >= 2  # restarted after failing
    assert orch.status(ref.id).state == RUNNING
    orch.stop(ref.id, timeout=5)
    st = wait_final(orch, ref.id)
    assert (st.state, st.reason) == (FAILED, "stopped")
    runs = list(orch.logs(ref.id)).count("run")
    time.sleep(1.0)
    assert list(orch.logs(ref.id)).count("run") == runs


def _escaping(orch, tmp_path, name, then="time.sleep(60)"):
    """A workload that starts a process in a session of its own (as jupyter_client starts a
    kernel), which writes its pid to a file."""
    pidfile = tmp_path / (name + ".pid")
    inner = "import os, time\nopen(%r, 'w').write(str(os.getpid()))\ntime.sleep(300)" \
        % str(pidfile)
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', %r], start_new_session=True)\n"
            "print('up', flush=True)\n%s") % (inner, then)
    ref = orch.launch(spec(name, code))
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    escaped = int(pidfile.read_text())
    assert os.getpgid(escaped) == escaped, "the test process did not leave the group"
    return ref, escaped


def _gone(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path("/proc/%d/stat" % pid).read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_process_that_left_the_group_ends_with_its_workload(orch, tmp_path):
    # the command ends on its own: what it left running ends with it, as in a container
    ref, escaped = _escaping(orch, tmp_path, "ends", then="time.sleep(0.5)")
    assert wait_final(orch, ref.id).state == SUCCEEDED
    assert _gone(escaped), "a process the workload started outlived it"
    # stopped: the kernel-like process goes with the engine
    ref, escaped = _escaping(orch, tmp_path, "stopped")
    orch.stop(ref.id, timeout=5)
    assert _gone(escaped, timeout=1.0)


def test_a_lost_workload_loses_the_process_that_left_its_group(orch, tmp_path):
    ref, escaped = _escaping(orch, tmp_path, "lost")
    runner = int((orch.root / ref.id / "pid").read_text())
    os.killpg(runner, 9)  # runner and engine; the escaped process is re-parented to init
    orch._children[ref.id].wait()
    assert not _gone(escaped, timeout=0.3), "SIGKILL of the group reached the escaped process"
    st = orch.status(ref.id)
    assert st.state == LOST and st.reason.endswith("its engine was stopped"), st
    assert _gone(escaped, timeout=1.0), "a lost workload's process runs on"
