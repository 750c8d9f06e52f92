"""An experiment run as a workload: the job's script rules, on the run's snapshot, plus the
run's tracking folder that the `cdsw` library writes to.

Where a run's things live:
- on the project storage every node shares (engines on any node mount them):
  projects_dir/.experiments/ID/files (the snapshot, at /home/cdsw) and .../tracking (the records
  file, at TRACKING_MOUNT);
- on the master only: data_dir/experiments/ID/run.log, tracking.jsonl (kept records) and
  artifacts/ (the tracked files, copied out of the snapshot when the run ends).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

from sqlalchemy.orm import Session

import cdsw

from ..jobs.launch import LaunchError, command, engine_python
from ..orchestrators import Mount, Orchestrator, WorkloadSpec
from ..settings import Settings
from ..store.experiments_models import ExperimentRun
from ..workloads import PROJECT_MOUNT, EngineError, EngineRequest, build_spec

RUN_LABEL = "io.cdsw.experiment-run"
TRACKING_MOUNT = "/var/lib/cdsw-experiment"
MAX_TRACKED_FILE_BYTES = 100 * 1024**2
# the folder holding the `cdsw` package, for engines that are plain processes (local backend)
LIBRARY_PATH = str(Path(cdsw.__file__).resolve().parent.parent)


def shared_dir(settings: Settings, run_id: int) -> Path:
    return Path(settings.projects_dir) / ".experiments" / str(run_id)


def files_dir(settings: Settings, run_id: int) -> Path:
    return shared_dir(settings, run_id) / "files"


def tracking_dir(settings: Settings, run_id: int) -> Path:
    return shared_dir(settings, run_id) / "tracking"


def master_dir(settings: Settings, run_id: int) -> Path:
    return Path(settings.data_dir) / "experiments" / str(run_id)


def log_file(settings: Settings, run_id: int) -> Path:
    return master_dir(settings, run_id) / "run.log"


def artifacts_dir(settings: Settings, run_id: int) -> Path:
    return master_dir(settings, run_id) / "artifacts"


def kept_records(settings: Settings, run_id: int) -> Path:
    return master_dir(settings, run_id) / cdsw.RECORDS_FILE


def prepare_tracking(settings: Settings, run_id: int, owner: Optional[int]) -> Path:
    """An empty tracking folder the engine user may write to."""
    d = tracking_dir(settings, run_id)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    if owner is not None:
        os.chown(d, owner, owner)
    return d


def environment(settings: Settings, run: ExperimentRun, local: bool) -> Dict[str, str]:
    """The run's identity and where the `cdsw` library writes. A local engine is a process on
    this host: it gets host paths and the library on its PYTHONPATH (images have it built in)."""
    env = {
        cdsw.ENV_EXPERIMENT_ID: str(run.id),
        cdsw.ENV_EXPERIMENT_DIR: TRACKING_MOUNT,
        cdsw.ENV_FILES_DIR: PROJECT_MOUNT,
        cdsw.ENV_MAX_FILE_BYTES: str(MAX_TRACKED_FILE_BYTES),
        "CDSW_SCRIPT": run.script,
    }
    if local:
        env[cdsw.ENV_EXPERIMENT_DIR] = str(tracking_dir(settings, run.id))
        env[cdsw.ENV_FILES_DIR] = str(files_dir(settings, run.id))
        env["PYTHONPATH"] = LIBRARY_PATH
    return env


def workload_spec(db: Session, settings: Settings, orchestrator: Orchestrator,
                  run: ExperimentRun) -> WorkloadSpec:
    """The engine of a run whose snapshot and tracking folder exist; LaunchError if it cannot
    be described."""
    try:
        cmd = command(run, engine_python(orchestrator),  # type: ignore[arg-type]
                      kernel=False)  # reads .script and .arguments only
    except ValueError as e:
        raise LaunchError(str(e))
    request = EngineRequest(
        kind="experiment", name="experiment-%d" % run.id, project=run.project,
        launcher=run.launched_by, command=cmd, files_dir=files_dir(settings, run.id),
        image_id=run.engine_image_id, profile_id=run.profile_id,
        env=environment(settings, run, orchestrator.name == "local"),
        labels={RUN_LABEL: str(run.id)})
    try:
        spec = build_spec(db, settings, orchestrator, request)
    except EngineError as e:
        raise LaunchError(str(e))
    spec.mounts.append(Mount(str(tracking_dir(settings, run.id)), TRACKING_MOUNT))
    return spec
