"""Experiment runs on the orchestrator, from the snapshot to the kept results.

Like job runs (jobs/runner.py; the orchestrator side is shared in workloads/oneshot.py), all
state lives in the database keyed by the workload id, so a restarted master re-adopts running
runs on its first `sync()` and records the real result of runs that ended while it was down.
A run that ended is then finalized once: its metrics are read a last time, its tracked files
copied into the master's artifacts and its snapshot dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Set

import cdsw
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..jobs.launch import LaunchError
from ..jobs.script import script_file
from ..orchestrators import RUNNING, Orchestrator, OrchestratorError, WorkloadStatus
from ..projects.storage import engine_owner
from ..store.db import Database
from ..store.experiments_models import ACTIVE_STATUSES, FINAL_STATUSES, ExperimentRun
from ..store.models import utcnow
from ..workloads import KIND_LABEL, oneshot
from . import launch, snapshot, tracking

log = logging.getLogger(__name__)
ORPHAN_CHECK_SECONDS = 30.0


class RunError(Exception):
    """A run request that cannot be done; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ExperimentRunner:
    def __init__(self, db: Database, settings: Any, orchestrator: oneshot.OrchestratorSource,
                 clock: Any = utcnow, max_snapshot_bytes: int = snapshot.DEFAULT_MAX_BYTES):
        self.db, self.settings, self.clock = db, settings, clock
        self.max_snapshot_bytes = max_snapshot_bytes
        self.follower = oneshot.WorkloadFollower(orchestrator)
        self.lock = threading.RLock()  # one actor at a time: API threads and the scheduler
        self._launching: Set[int] = set()  # runs whose snapshot is being taken
        self._orphans_checked = float("-inf")  # time.monotonic() of the last check

    @property
    def orchestrator(self) -> Orchestrator:
        return self.follower.orchestrator

    def log_file(self, run_id: int) -> Path:
        return launch.log_file(self.settings, run_id)

    def timeout(self, run: ExperimentRun) -> Optional[dt.timedelta]:
        minutes = run.timeout_minutes
        if minutes is None:
            minutes = self.settings.job_default_timeout_minutes
        return dt.timedelta(minutes=minutes) if minutes else None

    # --- starting
    def start_run(self, project_id: int, script: str, arguments: str = "", comment: str = "",
                  engine_image_id: Optional[int] = None, profile_id: Optional[int] = None,
                  timeout_minutes: Optional[int] = None, user_id: Optional[int] = None) -> int:
        """Records a run, snapshots the project, launches the engine; returns the run id.
        A run that cannot start ends at once as failed, with the reason in its log."""
        with self.db.session() as s:
            run = ExperimentRun(project_id=project_id, script=script, arguments=arguments,
                                comment=comment, engine_image_id=engine_image_id,
                                profile_id=profile_id, timeout_minutes=timeout_minutes,
                                status="queued", reason="", finalized=False, metrics={},
                                files=[], snapshot={}, launched_by_id=user_id,
                                created_at=self.clock())
            s.add(run)
            s.flush()
            run_id = run.id
        self._launch(run_id)
        self._finalize_if_final(run_id)
        return run_id

    def _launch(self, run_id: int) -> None:
        with self.lock:
            if run_id in self._launching:
                return
            self._launching.add(run_id)
        try:
            self._snapshot_and_launch(run_id)
        finally:
            with self.lock:
                self._launching.discard(run_id)

    def _snapshot_and_launch(self, run_id: int) -> None:
        with self.db.session() as s:
            run = s.get(ExperimentRun, run_id)
            if run is None or run.status != "queued" or run.workload_id is not None:
                return
            project_dir = Path(self.settings.projects_dir) / str(run.project_id)
            script = run.script
        try:
            script_file(project_dir, script)
        except LaunchError as e:
            self._end_now(run_id, "failed", str(e))
            return
        dest, owner = launch.files_dir(self.settings, run_id), engine_owner()
        taken: Optional[snapshot.Snapshot] = None
        if not dest.is_dir():  # a snapshot that exists is complete (it is renamed into place)
            # no lock while copying: a large project must not hold up the other runs
            try:
                taken = snapshot.take(project_dir, dest, self.max_snapshot_bytes, owner)
            except snapshot.SnapshotError as e:
                shutil.rmtree(launch.shared_dir(self.settings, run_id), ignore_errors=True)
                self._end_now(run_id, "failed", str(e))
                return
        launch.prepare_tracking(self.settings, run_id, owner)
        with self.lock, self.db.session() as s:
            run = s.get(ExperimentRun, run_id)
            if run is None or run.status != "queued":  # stopped while the snapshot was taken
                return
            if taken is not None:
                run.snapshot = taken.as_dict()
            ref, reason = oneshot.start(
                self.orchestrator, lambda: launch.workload_spec(s, self.settings,
                                                                self.orchestrator, run),
                "experiment run %d" % run_id)
            if ref is None:
                self._end(run, "failed", reason)
                return
            run.workload_id, run.started_at = ref.id, self.clock()
            log.info("experiment run %d started as %s", run_id, ref.id)

    def _end_now(self, run_id: int, status: str, reason: str) -> None:
        with self.lock, self.db.session() as s:
            run = s.get(ExperimentRun, run_id)
            if run is not None and run.status in ACTIVE_STATUSES:
                self._end(run, status, reason)

    def _end(self, run: ExperimentRun, status: str, reason: str,
             exit_code: Optional[int] = None, finished_at: Optional[dt.datetime] = None) -> None:
        """A final state; runs that never reached an engine get the reason in their log."""
        run.status, run.reason, run.exit_code = status, reason, exit_code
        run.finished_at = finished_at or self.clock()
        if run.workload_id is None and reason:
            self._append_log(run.id, [reason])
        log.info("experiment run %d %s%s", run.id, status, " (%s)" % reason if reason else "")

    def _append_log(self, run_id: int, lines: List[str]) -> None:
        path = self.log_file(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))

    # --- stopping
    def stop_run(self, run_id: int, who: str = "") -> None:
        with self.lock:
            with self.db.session() as s:
                run = s.get(ExperimentRun, run_id)
                if run is None:
                    raise RunError(404, "experiment run %d not found" % run_id)
                if run.status not in ACTIVE_STATUSES:
                    raise RunError(409, "experiment run %d already ended (%s)"
                                   % (run_id, run.status))
                run.reason = "stopped by %s" % who if who else "stopped on request"
                if run.workload_id is None:
                    self._end(run, "stopped", run.reason)
                else:
                    run.stop_requested = "user"
                workload_id = run.workload_id
            if workload_id is not None:
                self.follower.stop(workload_id)
            self.sync_run(run_id)

    # --- following runs
    def sync(self) -> None:
        """Polls every active run, and finalizes the ended ones a restart interrupted."""
        with self.db.session() as s:
            ids = s.scalars(select(ExperimentRun.id).where(
                ExperimentRun.tracker == "cdsw",  # MLflow clients run their own runs
                (ExperimentRun.status.in_(ACTIVE_STATUSES))
                | (ExperimentRun.finalized.is_(False))).order_by(ExperimentRun.id)).all()
        for run_id in ids:
            try:
                self.sync_run(run_id)
            except Exception:  # one broken run must not stop the others
                log.exception("cannot follow experiment run %d", run_id)
        if time.monotonic() - self._orphans_checked >= ORPHAN_CHECK_SECONDS:
            self.remove_orphans()

    def remove_orphans(self) -> List[str]:
        """Removes experiment engines whose run is gone (its project was deleted, which
        deletes its runs), with their snapshots; returns their workload ids."""
        self._orphans_checked = time.monotonic()
        try:
            refs = self.orchestrator.list({KIND_LABEL: "experiment"})
        except OrchestratorError as e:
            log.warning("cannot list experiment engines: %s", e)
            return []
        by_run = {}
        for ref in refs:
            prefix, _, number = ref.name.rpartition("-")
            if prefix == "experiment" and number.isdigit():
                by_run[int(number)] = ref.id
        if not by_run:
            return []
        with self.db.session() as s:
            known = set(s.scalars(select(ExperimentRun.id).where(
                ExperimentRun.id.in_(list(by_run)))))
        removed = []
        for run_id, workload_id in sorted(by_run.items()):
            if run_id not in known:
                log.info("experiment run %d is gone; removing its engine %s", run_id, workload_id)
                self.follower.remove(workload_id)
                shutil.rmtree(launch.shared_dir(self.settings, run_id), ignore_errors=True)
                removed.append(workload_id)
        return removed

    def sync_run(self, run_id: int) -> None:
        relaunch, remove = False, None
        with self.lock:
            if run_id in self._launching:
                return
            with self.db.session() as s:
                run = s.get(ExperimentRun, run_id)
                if run is None:
                    return
                if run.status in ACTIVE_STATUSES:
                    if run.workload_id is None:
                        relaunch = self._adopt(run)
                    else:
                        self._poll(s, run)
                        if run.status in FINAL_STATUSES:
                            remove = run.workload_id
        if remove:
            self.follower.remove(remove)
        if relaunch:  # the master died before the engine started: snapshot again, launch
            self._launch(run_id)
        self._finalize_if_final(run_id)

    def _adopt(self, run: ExperimentRun) -> bool:
        """Adopts the engine of a queued run the master launched just before dying; True when
        there is none and the run must be launched."""
        try:
            refs = self.orchestrator.list({launch.RUN_LABEL: str(run.id)})
        except OrchestratorError as e:
            log.warning("cannot list workloads for experiment run %d: %s", run.id, e)
            return False
        if not refs:
            return True
        run.workload_id, run.started_at = refs[0].id, run.started_at or self.clock()
        return False

    def _poll(self, s: Session, run: ExperimentRun) -> None:
        assert run.workload_id is not None
        status = self.follower.status(run.workload_id, "experiment run %d" % run.id)
        if status is None:
            return
        self._read_tracking(run)
        if not status.final:
            run.node = run.node or status.node
            if status.state == RUNNING and run.status == "queued":
                run.status = "running"
            self._copy_logs(run, final=False)
            limit = self.timeout(run)
            if run.stop_requested is None and limit and run.started_at \
                    and self.clock() - run.started_at > limit:
                run.stop_requested = "timeout"
                s.commit()  # the intent survives a crash during the stop
            if run.stop_requested is None:
                return
            self.follower.stop(run.workload_id)
            status = self.follower.status(run.workload_id, "experiment run %d" % run.id)
            if status is None or not status.final:
                return
            self._read_tracking(run)
        self._copy_logs(run, final=True)
        self._finish(run, status)

    def _finish(self, run: ExperimentRun, status: WorkloadStatus) -> None:
        run.node = run.node or status.node
        final, reason = oneshot.outcome(status, run.stop_requested, run.reason, self.timeout(run))
        self._end(run, final, reason, status.exit_code, oneshot.naive_utc(status.finished_at))

    def _copy_logs(self, run: ExperimentRun, final: bool) -> None:
        assert run.workload_id is not None
        self.follower.copy_logs(("experiment", run.id), run.workload_id,
                                self.log_file(run.id), final)

    def _read_tracking(self, run: ExperimentRun) -> tracking.Tracked:
        """Metrics and tracked files so far (files get their size when the run is finalized)."""
        tracked = tracking.read(launch.tracking_dir(self.settings, run.id) / cdsw.RECORDS_FILE)
        if tracked.metrics != (run.metrics or {}):
            run.metrics = dict(tracked.metrics)
        files = [{"path": p, "size": None} for p in tracked.files]
        if files != (run.files or []):
            run.files = files
        return tracked

    # --- after a run
    def _finalize_if_final(self, run_id: int) -> None:
        """Keeps what an ended run tracked and drops its snapshot; done once per run."""
        with self.lock, self.db.session() as s:
            run = s.get(ExperimentRun, run_id)
            if run is None or run.finalized or run.status not in FINAL_STATUSES:
                return
            if run.workload_id is not None:
                tracked = self._read_tracking(run)
                master = launch.master_dir(self.settings, run_id)
                kept, notes = tracking.collect_files(
                    launch.files_dir(self.settings, run_id),
                    launch.artifacts_dir(self.settings, run_id), tracked.files,
                    launch.MAX_TRACKED_FILE_BYTES)
                run.files = kept
                master.mkdir(parents=True, exist_ok=True)
                (master / "history.json").write_text(json.dumps(tracked.history))
                if tracked.notes or notes:
                    self._append_log(run_id, tracked.notes + notes)
            shutil.rmtree(launch.shared_dir(self.settings, run_id), ignore_errors=True)
            run.finalized = True

    def history(self, run_id: int) -> dict:
        """Every value each metric took, oldest first (kept when the run was finalized)."""
        path = launch.master_dir(self.settings, run_id) / "history.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            live = launch.tracking_dir(self.settings, run_id) / cdsw.RECORDS_FILE
            return tracking.read(live).history

    def stop_project_runs(self, project_id: int, who: str = "") -> List[int]:
        """Stops every active run of a project (before the project is deleted)."""
        with self.db.session() as s:
            ids = s.scalars(select(ExperimentRun.id).where(
                ExperimentRun.project_id == project_id, ExperimentRun.tracker == "cdsw",
                ExperimentRun.status.in_(ACTIVE_STATUSES))).all()
        for run_id in ids:
            try:
                self.stop_run(run_id, who)
            except RunError:
                pass  # ended meanwhile
        return list(ids)
