"""A job as a workload: which interpreter runs the script, where, with what environment.

A Python script runs in the engine's kernel (engine/job.py), as CDSW ran jobs: `display()` works
and its rich outputs are kept with the run (workloads/outputs.py). `CDSW_JOB_RUNNER=python` in
the job's environment runs it with plain Python instead (engine/plain.py: as `python3 script.py`,
except that no project file can shadow a module the script imports)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional

from sqlalchemy.orm import Session

from ..engine.job import MAX_START_WAIT, START_AT_VARIABLE
from ..orchestrators import Orchestrator, WorkloadSpec
from ..settings import Settings
from ..images.recipe import VENV
from ..store.jobs_models import Job, JobRun
from ..workloads import EngineError, EngineRequest, build_spec, engine_dir, outputs
from ..workloads.oneshot import LaunchError  # noqa: F401  (raised here, caught by the runners)
from . import script as script_copy

INTERPRETERS = {".py": "python3", ".r": "Rscript", ".sh": "bash"}
SCALA = ".scala"  # run by engine/scala_job.py in the engine's Scala REPL, on the cluster's Spark
SUFFIXES = tuple(INTERPRETERS) + (SCALA,)
RUN_LABEL = "io.cdsw.job-run"
RUNNER_VARIABLE = "CDSW_JOB_RUNNER"  # "python": plain Python (engine/plain.py), no kernel
# `python -I -c KERNEL_RUNNER SCRIPT ARGS...`: engine/job.py, or plain python in an image built
# by a version of CDSW before it (an upgraded master keeps using the images it had)
# A scheduled run may start ahead of its fire time (server/scheduler.py): START_AT_VARIABLE
# says when its script is to start. engine/job.py waits with its kernel ready; WAIT_UNTIL_START
# (standard library only, so any image runs it) waits before the other interpreters, and
# before engine/job.py of an image too old to wait itself.
WAIT_UNTIL_START = (  # engine/job.wait_for_start's rule, for any image's Python
    "import os, time\n"
    "try:\n"
    "    _d = float(os.environ.get(%r) or 0) - time.time()\n"
    "except ValueError:\n"
    "    _d = 0\n"
    "if 0 < _d <= %r:\n"
    "    time.sleep(_d)\n") % (START_AT_VARIABLE, MAX_START_WAIT)
WAIT_RUNNER = WAIT_UNTIL_START + "import sys\nos.execvp(sys.argv[1], sys.argv[1:])\n"
KERNEL_RUNNER = (
    "import os, sys\n"
    "try:\n"
    "    from cdsw_agent.engine import job\n"
    "except ImportError:\n"
    "    sys.stderr.write('cdsw job: this engine image cannot run jobs in a kernel (built by an "
    "older CDSW); the script runs with plain python, without display(); rebuild the image with "
    "`cdsw images build`\\n')\n"
    "    job = None\n"
    "if not hasattr(job, 'START_AT_VARIABLE'):\n"
    + "".join("    " + line + "\n" for line in WAIT_UNTIL_START.splitlines()) +
    "if job is None:\n"
    "    os.execvp('python3', ['python3'] + sys.argv[1:])\n"
    "job.main(sys.argv[1:])\n")
# `python -I -c PLAIN_RUNNER SCRIPT ARGS...`: engine/plain.py (a kernel's module paths, so no
# project file shadows a module the script imports), or plain python3 in an image built by a
# version of CDSW before it
PLAIN_RUNNER = (
    "import os, sys\n"
    "try:\n"
    "    from cdsw_agent.engine import plain\n"
    "except ImportError:\n"
    "    os.execvp('python3', ['python3'] + sys.argv[1:])\n"
    "plain.main(sys.argv[1:])\n")
# `python -I -c SCALA_RUNNER SCRIPT ARGS...`: engine/scala_job.py, or one line saying why not
SCALA_RUNNER = (
    "import sys\n"
    "try:\n"
    "    from cdsw_agent.engine.scala_job import main\n"
    "except ImportError:\n"
    "    sys.exit('cdsw job: this engine image cannot run Scala scripts (built by an older "
    "CDSW); rebuild it with `cdsw images build`')\n"
    "sys.exit(main(sys.argv[1:]))\n")


def check_script_path(script: str) -> str:
    """The script path normalised, or ValueError saying what is wrong with it."""
    p = PurePosixPath(script)
    if not script or p.is_absolute() or ".." in p.parts or "\\" in script or "\x00" in script:
        raise ValueError("give a path inside the project, relative to its folder, "
                         "such as analysis.py")
    if p.suffix.lower() not in SUFFIXES:
        raise ValueError("%s: a job runs a .py, .R, .sh or .scala script" % script)
    return str(p)


def parse_arguments(arguments: str) -> List[str]:
    try:
        return shlex.split(arguments)
    except ValueError as e:
        raise ValueError("arguments: %s; close every quote" % e)


def in_kernel(job: Job) -> bool:
    """Whether the script runs in the engine's kernel (Python scripts, unless the job asks for
    plain python)."""
    return PurePosixPath(job.script).suffix.lower() == ".py" \
        and str((job.env or {}).get(RUNNER_VARIABLE, "")).strip().lower() != "python"


def engine_python(orchestrator: Orchestrator) -> str:
    """The engine's interpreter: the image's virtualenv, or the master's own Python with the
    local backend."""
    return sys.executable if orchestrator.name == "local" else VENV + "/bin/python"


def command(job: Job, python: str, kernel: bool = True, start_at: bool = False) -> List[str]:
    """The run's command line; `python` is the engine's interpreter (engine_python). A Scala
    script runs in the engine's Scala REPL; with `kernel` (jobs), a Python job runs in the
    engine's kernel; otherwise (experiments) the script runs with its plain interpreter.
    `start_at`: the run has a START_AT_VARIABLE to wait for."""
    args = parse_arguments(job.arguments)
    suffix = PurePosixPath(job.script).suffix.lower()
    # -I: nothing from the project runs before the kernel or the REPL (engine/kernel.py)
    if kernel and in_kernel(job):
        return [python, "-I", "-c", KERNEL_RUNNER, job.script] + args  # waits itself
    if suffix == SCALA:
        cmd = [python, "-I", "-c", SCALA_RUNNER, job.script] + args
    elif suffix == ".py":
        cmd = [python, "-I", "-c", PLAIN_RUNNER, job.script] + args
    else:
        cmd = [INTERPRETERS[suffix], job.script] + args
    return [python, "-I", "-S", "-c", WAIT_RUNNER] + cmd if start_at else cmd


def environment(job: Job, run: JobRun, start_at: Optional[float] = None) -> Dict[str, str]:
    """The job's own variables, then the run's identity (engine.py adds site, project and CDSW's)."""
    env = {str(k): str(v) for k, v in (job.env or {}).items()}
    env.update(CDSW_JOB_ID=str(job.id), CDSW_RUN_ID=str(run.id), CDSW_JOB_NAME=job.name,
               CDSW_RUN_TRIGGER=run.trigger,
               # the scheduler's alone (set, even empty, so no project variable stands in)
               **{START_AT_VARIABLE: "%.3f" % start_at if start_at is not None else ""})
    return env


def engine_name(run: JobRun) -> str:
    return "job-%d-run-%d" % (run.job_id, run.id)


def workload_spec(db: Session, settings: Settings, orchestrator: Orchestrator, job: Job,
                  run: JobRun, project_dir: Path, script: bytes,
                  start_at: Optional[float] = None) -> WorkloadSpec:
    """The run's engine; it acts as the run's person (jobs/identity.py), never the creator, and
    runs `script`, the bytes the runner read and checked (jobs/script.py), whatever the
    project's file holds by then. `start_at` (seconds since the epoch): when its script is to
    start, if later than now."""
    local = orchestrator.name == "local"
    try:
        cmd = command(job, engine_python(orchestrator), start_at=start_at is not None)
    except ValueError as e:
        raise LaunchError(str(e))
    request = EngineRequest(
        kind="job", name=engine_name(run), project=job.project,
        launcher=run.run_as, command=cmd, files_dir=project_dir,
        image_id=job.engine_image_id, profile_id=job.profile_id,
        env=environment(job, run, start_at),
        labels={RUN_LABEL: str(run.id)})
    try:
        spec = build_spec(db, settings, orchestrator, request)
    except EngineError as e:
        raise LaunchError(str(e))
    folder = engine_dir(settings, spec.name)
    script_copy.attach(spec, folder, job.script, script, local)
    if in_kernel(job):
        outputs.attach(spec, folder, local)
    return spec
