"""A job as a workload: which interpreter runs the script, where, with what environment."""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath
from typing import Dict, List

from sqlalchemy.orm import Session

from ..orchestrators import Orchestrator, WorkloadSpec
from ..settings import Settings
from ..store.jobs_models import Job, JobRun
from ..workloads import EngineError, EngineRequest, build_spec
from ..workloads.oneshot import LaunchError  # noqa: F401  (raised here, caught by the runners)

INTERPRETERS = {".py": "python3", ".r": "Rscript", ".sh": "bash"}
RUN_LABEL = "io.cdsw.job-run"


def check_script_path(script: str) -> str:
    """The script path normalised, or ValueError saying what is wrong with it."""
    p = PurePosixPath(script)
    if not script or p.is_absolute() or ".." in p.parts or "\\" in script or "\x00" in script:
        raise ValueError("give a path inside the project, relative to its folder, "
                         "such as analysis.py")
    if p.suffix.lower() not in INTERPRETERS:
        raise ValueError("%s: a job runs a .py, .R or .sh script" % script)
    return str(p)


def script_file(project_dir: Path, script: str) -> Path:
    """The script on disk; LaunchError when it is missing or points outside the project."""
    path = project_dir / script
    try:
        real, root = path.resolve(), project_dir.resolve()
    except (OSError, RuntimeError):
        raise LaunchError("script %s not found" % script)
    if root not in real.parents or not real.is_file():
        raise LaunchError("script %s not found" % script)
    return real


def parse_arguments(arguments: str) -> List[str]:
    try:
        return shlex.split(arguments)
    except ValueError as e:
        raise ValueError("arguments: %s; close every quote" % e)


def command(job: Job) -> List[str]:
    suffix = PurePosixPath(job.script).suffix.lower()
    return [INTERPRETERS[suffix], job.script] + parse_arguments(job.arguments)


def environment(job: Job, run: JobRun) -> Dict[str, str]:
    """The job's own variables, then the run's identity (engine.py adds site, project and CDSW's)."""
    env = {str(k): str(v) for k, v in (job.env or {}).items()}
    env.update(CDSW_JOB_ID=str(job.id), CDSW_RUN_ID=str(run.id), CDSW_JOB_NAME=job.name,
               CDSW_RUN_TRIGGER=run.trigger)
    return env


def workload_spec(db: Session, settings: Settings, orchestrator: Orchestrator, job: Job,
                  run: JobRun, project_dir: Path) -> WorkloadSpec:
    """The run's engine; it acts as the run's person (jobs/identity.py), never the creator."""
    script_file(project_dir, job.script)
    try:
        cmd = command(job)
    except ValueError as e:
        raise LaunchError(str(e))
    request = EngineRequest(
        kind="job", name="job-%d-run-%d" % (job.id, run.id), project=job.project,
        launcher=run.run_as, command=cmd, files_dir=project_dir,
        image_id=job.engine_image_id, profile_id=job.profile_id, env=environment(job, run),
        labels={RUN_LABEL: str(run.id)})
    try:
        return build_spec(db, settings, orchestrator, request)
    except EngineError as e:
        raise LaunchError(str(e))
