"""Jobs in the engine's kernel (cdsw_agent/engine/job.py) and the rich outputs the master keeps
from them (cdsw_agent/workloads/outputs.py)."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cdsw_agent.engine import job as engine_job
from cdsw_agent.jobs import launch
from cdsw_agent.orchestrators import WorkloadSpec
from cdsw_agent.workloads import outputs

SCRIPT = """\
import sys
print("args", sys.argv[1:], __file__)
import pandas as pd
display(pd.DataFrame({"city": ["Oslo"], "n": [42]}))
import matplotlib.pyplot as plt
plt.plot([1, 4, 9]); plt.show()
import plotly.graph_objects as go
go.Figure(go.Scatter(x=[1, 2], y=[3, 4])).show()
print("to stderr", file=sys.stderr)
sys.exit(3)
"""


def test_a_script_runs_in_the_kernel_with_display_and_its_exit_status(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "report.py").write_text(SCRIPT)
    monkeypatch.chdir(tmp_path)
    out, err, rich = io.StringIO(), io.StringIO(), io.StringIO()
    code = engine_job.run("report.py", ["a", "b c"], rich, out, err)
    assert code == 3, err.getvalue()
    log = out.getvalue()
    assert log.startswith("args ['a', 'b c'] report.py\n")
    assert "Oslo" in log and "<Figure size" in log  # the text forms, in the plain log
    assert "to stderr" in err.getvalue() and "To exit" not in err.getvalue()
    items = [json.loads(line) for line in rich.getvalue().splitlines()]
    assert [sorted(i["data"]) for i in items] == [
        ["text/html", "text/plain"], ["image/png", "text/plain"],
        ["application/vnd.plotly.v1+json"]]  # the kernel's PLOTLY_RENDERER: data, no 4 MB script
    assert "<table" in items[0]["data"]["text/html"] and "Oslo" in items[0]["data"]["text/html"]
    assert items[2]["data"]["application/vnd.plotly.v1+json"]["data"][0]["type"] == "scatter"


def test_errors_and_dead_kernels_fail_the_run_with_a_plain_traceback(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "boom.py").write_text("x = 1\nraise ValueError('boom')\n")
    (tmp_path / "gone.py").write_text("import os\nos._exit(0)\n")
    err = io.StringIO()
    assert engine_job.run("boom.py", [], None, io.StringIO(), err) == 1
    assert "ValueError: boom" in err.getvalue() and "\x1b[" not in err.getvalue()
    err = io.StringIO()
    assert engine_job.run("gone.py", [], None, io.StringIO(), err) == 2
    assert "the Python kernel stopped" in err.getvalue()


@pytest.mark.parametrize("reply,code", [
    ({"status": "ok"}, 0), ({"status": "error", "ename": "SystemExit", "evalue": ""}, 0),
    ({"status": "error", "ename": "SystemExit", "evalue": "4"}, 4),
    ({"status": "error", "ename": "SystemExit", "evalue": "bye"}, 1),
    ({"status": "error", "ename": "KeyError", "evalue": "'k'"}, 1)])
def test_exit_status_of_a_cell(reply: dict, code: int) -> None:
    assert engine_job.exit_code(reply) == code


def job(script: str, env: dict = None) -> SimpleNamespace:  # type: ignore[assignment]
    return SimpleNamespace(script=script, arguments="--day 'to day'", env=env or {})


def test_python_jobs_run_in_the_kernel_unless_asked_for_plain_python() -> None:
    assert launch.command(job("etl.py"), "/venv/bin/python") == [
        "/venv/bin/python", "-I", "-c", launch.KERNEL_RUNNER, "etl.py", "--day", "to day"]
    assert launch.command(job("etl.py", {"CDSW_JOB_RUNNER": "python"}), "/venv/bin/python") == [
        "/venv/bin/python", "-I", "-c", launch.PLAIN_RUNNER, "etl.py", "--day", "to day"]
    # experiments share the command line without the kernel: plain python (engine/plain.py)
    run = SimpleNamespace(script="fit.py", arguments="--alpha 0.5")
    assert launch.command(run, "/venv/bin/python", kernel=False) == [  # type: ignore[arg-type]
        "/venv/bin/python", "-I", "-c", launch.PLAIN_RUNNER, "fit.py", "--alpha", "0.5"]
    assert launch.command(job("etl.R"), "/venv/bin/python")[:2] == ["Rscript", "etl.R"]


def test_scala_scripts_run_in_the_engines_scala_repl_for_jobs_and_experiments() -> None:
    expected = ["/venv/bin/python", "-I", "-c", launch.SCALA_RUNNER, "etl.scala", "--day",
                "to day"]
    assert launch.command(job("etl.scala"), "/venv/bin/python") == expected
    assert launch.command(job("etl.scala"), "/venv/bin/python", kernel=False) == expected
    assert launch.check_script_path("jobs/ETL.Scala") == "jobs/ETL.Scala"
    with pytest.raises(ValueError, match=r"\.py, \.R, \.sh or \.scala"):
        launch.check_script_path("etl.java")


def test_scala_job_arguments_are_scala_string_literals() -> None:
    from cdsw_agent.engine import scala_job

    assert scala_job.args_code([]) == "val args: Array[String] = Array[String]()"
    assert scala_job.args_code(['a "b"', "c\\d\n", "$x"]) == (
        'val args: Array[String] = Array[String]("a \\"b\\"", "c\\\\d\\n", "$x")')


def spec() -> WorkloadSpec:
    return WorkloadSpec(name="job-1-run-2", image="img", command=["x"], env={})


def test_the_engine_gets_a_folder_of_its_own_for_its_outputs(tmp_path: Path) -> None:
    local = spec()
    folder = outputs.attach(local, tmp_path / "e", local=True)
    assert local.env["CDSW_OUTPUTS_FILE"] == str(folder / "outputs.ndjson")
    assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
    swarm = spec()
    outputs.attach(swarm, tmp_path / "e", local=False)
    assert swarm.env["CDSW_OUTPUTS_FILE"] == "/var/lib/cdsw/outputs/outputs.ndjson"
    assert [(m.source, m.target) for m in swarm.mounts] == [(str(folder), "/var/lib/cdsw/outputs")]


def test_outputs_are_kept_as_complete_known_lines_never_through_a_link(tmp_path: Path) -> None:
    engine = tmp_path / "engine"
    folder = outputs.engine_folder(engine)
    folder.mkdir(parents=True)
    kept = tmp_path / "runs" / "2.outputs.ndjson"
    lines = [{"type": "display_data", "data": {"image/png": "AAAA", "text/x-evil": "no"}},
             "not an object", {"type": "display_data", "data": {"text/x-evil": "only"}},
             {"type": "display_data", "data": {"text/html": "<table></table>"}}]
    (folder / "outputs.ndjson").write_text(
        "\n".join(json.dumps(x) for x in lines) + "\n{broken\n" + '{"type": "display_data", "da')
    outputs.collect(engine, kept)
    assert outputs.read(kept) == [{"type": "display_data", "data": {"image/png": "AAAA"}},
                                  {"type": "display_data", "data": {"text/html": "<table></table>"}}]
    # the run's code swaps its file for a link to a master's file: nothing is copied
    secret = tmp_path / "secret"
    secret.write_text('{"type": "display_data", "data": {"text/plain": "master secret"}}\n')
    (folder / "outputs.ndjson").unlink()
    os.symlink(secret, folder / "outputs.ndjson")
    kept.unlink()
    outputs.collect(engine, kept)
    assert not kept.exists() and outputs.read(kept) == []
    outputs.remove(engine)
    assert not folder.exists() and secret.exists()


def test_a_stopped_job_takes_its_kernel_with_it(tmp_path: Path) -> None:
    """SIGTERM (stop, timeout) reaches the runner's process group only; the kernel runs in a
    session of its own and must not outlive the run."""
    import signal
    import subprocess
    import time

    (tmp_path / "slow.py").write_text("import os, time\nprint('kernel', os.getpid(), flush=True)\n"
                                      "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-I", "-m", "cdsw_agent.engine.job", "slow.py"],
                            cwd=str(tmp_path), stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("kernel "), line
        kernel = int(line.split()[1])
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(kernel, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the kernel %d outlived its stopped job" % kernel)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_image_from_before_the_kernel_runner_runs_the_script_with_plain_python(tmp_path: Path) -> None:
    """An upgraded master still uses the images it had: the Debian python3 here has no
    cdsw_agent, like an image built by an older version."""
    import subprocess

    (tmp_path / "hello.py").write_text("import sys\nprint('hello', sys.argv[1:])\n")
    r = subprocess.run(["/usr/bin/python3", "-I", "-c", launch.KERNEL_RUNNER, "hello.py", "a b"],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin"})
    assert (r.returncode, r.stdout) == (0, "hello ['a b']\n"), r.stderr
    assert "rebuild the image with `cdsw images build`" in r.stderr
    # and where the runner is there, the same command line runs the kernel
    r = subprocess.run([sys.executable, "-I", "-c", launch.KERNEL_RUNNER, "hello.py", "a b"],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout) == (0, "hello ['a b']\n"), r.stderr
    assert "rebuild" not in r.stderr


def test_outputs_are_copied_again_only_when_the_engine_wrote_more(tmp_path: Path) -> None:
    engine = tmp_path / "engine"
    folder = outputs.engine_folder(engine)
    folder.mkdir(parents=True)
    source, kept = folder / "outputs.ndjson", tmp_path / "kept.ndjson"
    first = json.dumps({"type": "display_data", "data": {"image/png": "AAAA"}}) + "\n"
    source.write_text(first)
    os.utime(source, ns=(10**18, 10**18))
    outputs.collect(engine, kept)
    assert kept.read_text() == first
    kept.write_text("")  # marks what a second copy would overwrite
    outputs.collect(engine, kept)
    assert kept.read_text() == ""  # the source did not change: no copy
    outputs.collect(engine, kept, final=True)
    assert kept.read_text() == first  # the final copy always happens
    kept.write_text("")
    with open(source, "a") as f:
        f.write(first)
    os.utime(source, ns=(2 * 10**18, 2 * 10**18))  # written after the last copy
    outputs.collect(engine, kept)
    assert kept.read_text() == first * 2


def test_the_workbench_draws_plots_with_the_plotly_js_the_engines_plotly_expects() -> None:
    """The console and run pages draw figures with web/package.json's plotly.js; the engine
    image (recipe) and local engines (setup.py) pin the plotly whose bundled plotly.js it is."""
    import plotly
    from plotly.offline import get_plotlyjs_version

    from cdsw_agent.images.recipe import BASE_REQUIREMENTS
    from cdsw_agent.web.assets import WEB_DIR

    web = json.loads((WEB_DIR / "package.json").read_text())["dependencies"]
    assert web["plotly.js-dist-min"] == get_plotlyjs_version()
    assert "plotly==%s" % plotly.__version__ in BASE_REQUIREMENTS


# --- runs the scheduler starts ahead of their fire time (server/scheduler.py) --------------

def test_a_run_started_ahead_waits_for_its_instant_in_every_runner() -> None:
    assert launch.START_AT_VARIABLE == engine_job.START_AT_VARIABLE
    # the kernel runner waits itself (engine/job.py, with its kernel ready); the others wait
    # in a standard-library prelude before the interpreter is exec'd
    assert launch.command(job("etl.py"), "/py", start_at=True) == launch.command(job("etl.py"), "/py")
    assert launch.command(job("etl.sh"), "/py", start_at=True) == [
        "/py", "-I", "-S", "-c", launch.WAIT_RUNNER, "bash", "etl.sh", "--day", "to day"]
    assert launch.command(job("etl.scala"), "/py", start_at=True)[:5] == [
        "/py", "-I", "-S", "-c", launch.WAIT_RUNNER]
    run = SimpleNamespace(id=7, trigger="schedule")
    own = SimpleNamespace(id=3, name="etl", env={"CDSW_JOB_START_AT": "1"})
    env = launch.environment(own, run, 1234.5)  # type: ignore[arg-type]
    assert env["CDSW_JOB_START_AT"] == "1234.500"
    # a job's own variable never stands in for the scheduler's instant
    env = launch.environment(own, run)  # type: ignore[arg-type]
    assert env["CDSW_JOB_START_AT"] == ""


@pytest.mark.parametrize("runner", ["wait", "kernel-fallback"])
def test_the_wait_prelude_execs_the_script_at_its_instant(tmp_path: Path, runner: str) -> None:
    import subprocess
    import time

    (tmp_path / "clock.py").write_text("import time\nprint(repr(time.time()))\n")
    if runner == "wait":
        argv = [sys.executable, "-I", "-S", "-c", launch.WAIT_RUNNER, sys.executable, "clock.py"]
    else:  # an image without engine/job.py: the kernel runner waits, then plain python
        argv = ["/usr/bin/python3", "-I", "-c", launch.KERNEL_RUNNER, "clock.py"]
    for ahead, minimum in ((1.5, 1.5), (-30.0, None), ("garbage", None), (3600.0, None)):
        at = "garbage" if ahead == "garbage" else "%.3f" % (time.time() + ahead)  # type: ignore[operator]
        began = time.time()
        r = subprocess.run(argv, cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
                           env={"PATH": "/usr/bin:/bin", "CDSW_JOB_START_AT": at})
        assert r.returncode == 0, r.stderr
        started = float(r.stdout.strip().splitlines()[-1])
        if minimum is not None:  # waited until the instant, not much longer
            assert float(at) <= started < float(at) + 1.0, (started - float(at))
        else:  # in the past, unreadable or not the scheduler's (over 60 s away): at once
            assert started - began < 1.0, (ahead, started - began)


def test_a_kernel_job_started_ahead_runs_its_script_at_the_instant(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    (tmp_path / "clock.py").write_text("import time\nprint(repr(time.time()))\n")
    monkeypatch.chdir(tmp_path)
    at = time.time() + 6.0  # longer than the kernel takes to start on a busy machine
    monkeypatch.setenv("CDSW_JOB_START_AT", "%.3f" % at)
    out, err = io.StringIO(), io.StringIO()
    assert engine_job.run("clock.py", [], None, out, err) == 0, err.getvalue()
    started = float(out.getvalue().strip())
    assert at <= started < at + 1.0, started - at


def test_the_kernel_runs_the_masters_copy_whatever_the_projects_file_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collaborator who rewrites the script after the master checked it (jobs/script.py) does
    not get their version run: the runner reads the copy; the script keeps its own name."""
    (tmp_path / "nightly.py").write_text("print('evil')\n")
    copy = tmp_path / "copy" / "nightly.py"
    copy.parent.mkdir()
    copy.write_text("import sys\nprint('approved', __file__, sys.argv)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CDSW_JOB_SCRIPT_COPY", str(copy))
    out, err = io.StringIO(), io.StringIO()
    assert engine_job.run("nightly.py", ["x"], None, out, err) == 0, err.getvalue()
    assert out.getvalue() == "approved nightly.py ['nightly.py', 'x']\n"


def test_plain_python_runs_the_script_with_a_kernels_paths(tmp_path: Path) -> None:
    """engine/plain.py through the runner the command line gives: a project file named like a
    module the script imports (json.py) does not shadow it, a module of the project that shadows
    nothing still imports, and `__name__`, `__file__`, sys.argv and the exit status are those of
    `python3 SCRIPT ARGS`."""
    import subprocess

    (tmp_path / "jobs").mkdir()
    (tmp_path / "json.py").write_text("print('EVIL json.py ran')\n")
    (tmp_path / "jobs" / "json.py").write_text("print('EVIL jobs/json.py ran')\n")
    (tmp_path / "jobs" / "helpers.py").write_text("WHO = 'helpers from the script folder'\n")
    (tmp_path / "jobs" / "fit.py").write_text(
        "import json, sys\nimport helpers\n"
        "print(json.dumps([__name__, __file__, sys.argv, helpers.WHO]))\n"
        "if __name__ == '__main__':\n    sys.exit(4)\n")
    cmd = launch.command(SimpleNamespace(script="jobs/fit.py", arguments="a 'b c'"),  # type: ignore[arg-type]
                         sys.executable, kernel=False)
    env = dict(os.environ, PYTHONPATH="", PYTHONUNBUFFERED="1")
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 4, out.stderr
    assert "EVIL" not in out.stdout + out.stderr
    assert json.loads(out.stdout) == ["__main__", "jobs/fit.py", ["jobs/fit.py", "a", "b c"],
                                      "helpers from the script folder"]
    # with the master's copy (jobs/script.py), that is what runs, under the script's name
    copy = tmp_path / "copy.py"
    copy.write_text("import sys\nprint('copy', __file__, sys.argv[1:])\n")
    out = subprocess.run(cmd, cwd=tmp_path, env=dict(env, CDSW_JOB_SCRIPT_COPY=str(copy)),
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "copy jobs/fit.py ['a', 'b c']\n"), out.stderr
