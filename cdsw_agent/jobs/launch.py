"""A job as a workload: which interpreter runs the script, where, with what environment."""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..orchestrators import Mount, WorkloadSpec
from ..settings import Settings
from ..store.envvars import effective as engine_env
from ..store.jobs_models import Job, JobRun
from ..store.models import EngineImage, EngineProfile

PROJECT_MOUNT = "/home/cdsw"  # where engines see the project folder, as in CDSW
INTERPRETERS = {".py": "python3", ".r": "Rscript", ".sh": "bash"}
RUN_LABEL = "io.cdsw.job-run"


class LaunchError(Exception):
    """The run cannot start; str() is the run's one-line reason."""


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


def _image(db: Session, job: Job, required: bool) -> str:
    image_id = job.engine_image_id or job.project.default_engine_image_id
    image = db.get(EngineImage, image_id) if image_id else \
        db.scalars(select(EngineImage).where(EngineImage.is_default.is_(True))).first()
    if image is not None:
        return "%s:%s" % (image.repository, image.tag)
    if required:
        raise LaunchError("no engine image: choose one for the job or the project, or mark a "
                          "site default image")
    return "none"  # the local backend ignores images


def environment(db: Session, job: Job, run: JobRun, proxies: Dict[str, str]) -> Dict[str, str]:
    """Site, then project, then job variables (later wins), then CDSW's own."""
    env = {k: v for k, v in proxies.items() if v}
    env.update(engine_env(db, job.project_id))
    env.update({str(k): str(v) for k, v in (job.env or {}).items()})
    env.update(CDSW_PROJECT=job.project.slug, CDSW_PROJECT_ID=str(job.project_id),
               CDSW_JOB_ID=str(job.id), CDSW_RUN_ID=str(run.id), CDSW_JOB_NAME=job.name,
               CDSW_RUN_TRIGGER=run.trigger, PYTHONUNBUFFERED="1")
    return env


def workload_spec(db: Session, job: Job, run: JobRun, project_dir: Path,
                  proxies: Dict[str, str], image_required: bool) -> WorkloadSpec:
    script_file(project_dir, job.script)
    try:
        cmd = command(job)
    except ValueError as e:
        raise LaunchError(str(e))
    profile: Optional[EngineProfile] = db.get(EngineProfile, job.profile_id) \
        if job.profile_id else None
    cpu = profile.cpu if profile else 0.0
    memory = int(profile.memory_gb * 2**30) if profile else 0
    return WorkloadSpec(
        name="job-%d-run-%d" % (job.id, run.id), image=_image(db, job, image_required),
        command=cmd, env=environment(db, job, run, proxies),
        mounts=[Mount(str(project_dir), PROJECT_MOUNT)], workdir=PROJECT_MOUNT,
        cpu_reservation=cpu, cpu_limit=cpu, memory_reservation=memory, memory_limit=memory,
        gpus=profile.gpus if profile else 0,
        labels={"io.cdsw.kind": "job", RUN_LABEL: str(run.id),
                "io.cdsw.project": str(job.project_id)})


def proxies_from(settings: Settings) -> Dict[str, str]:
    return {"HTTP_PROXY": settings.http_proxy,
            "HTTPS_PROXY": settings.https_proxy,
            "NO_PROXY": settings.no_proxy}
