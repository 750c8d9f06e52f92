"""Runs of jobs on the orchestrator, from start to recorded result.

All state lives in the database, keyed by the workload id the orchestrator keeps, so a master
that restarts re-adopts running runs on its first `sync()` and records the real result of runs
that ended while it was down. Follow-ups of a finished run (dependent jobs, mail) are marked
done only after they happened, so a restart in between redoes them (children at most once:
a child run remembers its parent run).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Union

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..orchestrators import RUNNING, Orchestrator, OrchestratorError, WorkloadStatus
from ..store.db import Database
from ..store.jobs_models import ACTIVE_STATUSES, FINAL_STATUSES, Job, JobRun
from ..store.models import AuditEvent, utcnow
from ..workloads import engine_dir, oneshot, outputs
from . import identity, notify, script
from .launch import RUN_LABEL, LaunchError, engine_name, workload_spec

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]  # naive UTC, like the database
STOP_GRACE_SECONDS = oneshot.STOP_GRACE_SECONDS


class RunError(Exception):
    """A run request that cannot be done; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def tail(path: Path, lines: int = notify.TAIL_LINES) -> List[str]:
    return oneshot.tail(path, lines)


def log_file(data_dir: Any, run: JobRun) -> Path:
    return Path(data_dir) / run.log_path


def outputs_file(data_dir: Any, run: JobRun) -> Path:
    """The run's rich outputs (workloads/outputs.py), next to its log."""
    return log_file(data_dir, run).with_suffix(".outputs.ndjson")


class JobRunner:
    def __init__(self, db: Database, settings: Any,
                 orchestrator: Union[Orchestrator, Callable[[], Orchestrator]],
                 clock: Clock = utcnow):
        """`orchestrator` may be a factory: it is called (again after an OrchestratorError)
        when first needed, so a master starts while Docker is still down."""
        self.db, self.settings, self.clock = db, settings, clock
        self.follower = oneshot.WorkloadFollower(orchestrator)
        self.lock = threading.RLock()  # one actor at a time: API threads and the scheduler

    @property
    def orchestrator(self) -> Orchestrator:
        return self.follower.orchestrator

    # --- paths and settings
    def log_file(self, run: JobRun) -> Path:
        return log_file(self.settings.data_dir, run)

    def project_dir(self, project_id: int) -> Path:
        return Path(self.settings.data_dir) / "projects" / str(project_id)

    def timeout(self, job: Job) -> Optional[dt.timedelta]:
        minutes = job.timeout_minutes
        if minutes is None:
            minutes = self.settings.job_default_timeout_minutes
        return dt.timedelta(minutes=minutes) if minutes else None

    # --- starting
    def start_run(self, job_id: int, trigger: str, user_id: Optional[int] = None,
                  parent_run_id: Optional[int] = None,
                  in_txn: Optional[Callable[[Session, Job], None]] = None,
                  start_at: Optional[dt.datetime] = None) -> int:
        """Records a run, launches it and returns its id. While another run of the job is
        active, a manual start is refused (409) and any other start is recorded as skipped.
        `in_txn` runs in the transaction that records the run (the scheduler marks the fire
        time there, so a fire time is handled exactly when its run is recorded). `start_at`
        (the clock's time, a fire time ahead): the engine starts now, its script then
        (jobs/launch.py), and the run counts as started then (its timeout too)."""
        with self.lock:
            with self.db.session() as s:
                job = s.get(Job, job_id)
                if job is None:
                    raise RunError(404, "job %d not found" % job_id)
                active = s.scalars(select(JobRun).where(
                    JobRun.job_id == job_id, JobRun.status.in_(ACTIVE_STATUSES))).first()
                if active is not None and trigger == "manual":
                    raise RunError(409, "job %s is already running (run %d); stop that run "
                                        "first" % (job.name, active.id))
                run = JobRun(job_id=job_id, trigger=trigger, triggered_by_id=user_id,
                             parent_run_id=parent_run_id, status="queued", reason="",
                             run_as_user_id=identity.acting_user_id(job, trigger, user_id),
                             finalized=False, created_at=self.clock())
                if active is not None:
                    run.status, run.finalized, run.finished_at = "skipped", True, self.clock()
                    run.reason = "run %d was still running" % active.id
                    log.info("job %s: %s run skipped, run %d is still running",
                             job.name, trigger, active.id)
                s.add(run)
                s.flush()
                run.log_path = "jobs/runs/%d.log" % run.id
                if trigger != "manual":  # manual starts are audited with their user by the API
                    s.add(AuditEvent(actor="scheduler", action="job.run",
                                     target=("%d/%s" % (job.project_id, job.name))[:255],
                                     detail={"job_id": job.id, "run_id": run.id,
                                             "trigger": trigger, "status": run.status,
                                             "parent_run_id": parent_run_id,
                                             "run_as_user_id": run.run_as_user_id}))
                if in_txn is not None:
                    in_txn(s, job)
            if run.status == "queued":
                with self.db.session() as s:
                    fresh = s.get(JobRun, run.id)
                    assert fresh is not None
                    self._launch(s, fresh, start_at)
                self._follow_up_if_final(run.id)
            return run.id

    def _launch(self, s: Session, run: JobRun, start_at: Optional[dt.datetime] = None) -> None:
        job = run.job
        ahead = (start_at - self.clock()).total_seconds() if start_at is not None else 0.0
        # the instant on this host's clock, whatever clock the runner reads
        wait_until = time.time() + ahead if ahead > 0 else None
        project_dir = self.project_dir(job.project_id)
        refused, text = identity.refusal(run), b""
        if not refused:
            try:
                text = script.read(project_dir, job.script)
            except LaunchError as e:
                refused = str(e)
            else:
                refused = identity.script_refusal(run, script.digest(text))
        if refused:
            self._end(run, "failed", refused)
            return
        ref, reason = oneshot.start(
            self.orchestrator, lambda: workload_spec(s, self.settings, self.orchestrator, job, run,
                                                     project_dir, text, wait_until),
            "run %d of job %s" % (run.id, job.name))
        if ref is None:
            script.remove(engine_dir(self.settings, engine_name(run)))
            self._end(run, "failed", reason)
            return
        # queued until the orchestrator says it runs (it may wait for a node with room)
        run.workload_id = ref.id
        run.started_at = self.clock() + dt.timedelta(seconds=ahead) if ahead > 0 else self.clock()
        log.info("job %s: run %d started (%s) as %s", job.name, run.id, run.trigger, ref.id)

    def _end(self, run: JobRun, status: str, reason: str, exit_code: Optional[int] = None,
             finished_at: Optional[dt.datetime] = None) -> None:
        """A final state; runs that never reached an engine get the reason in their log."""
        run.status, run.reason, run.exit_code = status, reason, exit_code
        run.finished_at = finished_at or self.clock()
        if run.workload_id is None and reason:
            path = self.log_file(run)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(reason + "\n")
        log.info("job %s: run %d %s%s", run.job.name, run.id, status,
                 " (%s)" % reason if reason else "")

    # --- stopping
    def stop_run(self, run_id: int, who: str = "") -> None:
        with self.lock:
            with self.db.session() as s:
                run = s.get(JobRun, run_id)
                if run is None:
                    raise RunError(404, "run %d not found" % run_id)
                if run.status not in ACTIVE_STATUSES:
                    raise RunError(409, "run %d already ended (%s)" % (run_id, run.status))
                run.reason = "stopped by %s" % who if who else "stopped on request"
                if run.workload_id is None:
                    self._end(run, "stopped", run.reason)
                else:
                    run.stop_requested = "user"
                workload_id = run.workload_id
            if workload_id is not None:
                self._stop_workload(workload_id)
            self.sync_run(run_id)

    def stop_project_runs(self, project_id: int, who: str = "") -> List[int]:
        """Stops every active run of a project's jobs (before the project is deleted)."""
        with self.db.session() as s:
            ids = s.scalars(select(JobRun.id).join(Job).where(
                Job.project_id == project_id, JobRun.status.in_(ACTIVE_STATUSES))).all()
        for run_id in ids:
            try:
                self.stop_run(run_id, who)
            except RunError:
                pass  # ended meanwhile
        return list(ids)

    def _stop_workload(self, workload_id: str) -> None:
        self.follower.stop(workload_id)

    # --- following runs
    def sync(self) -> None:
        """Polls every active run, and redoes follow-ups a restart interrupted."""
        with self.db.session() as s:
            ids = s.scalars(select(JobRun.id).where(
                (JobRun.status.in_(ACTIVE_STATUSES)) | (JobRun.finalized.is_(False)))
                .order_by(JobRun.id)).all()
        for run_id in ids:
            try:
                self.sync_run(run_id)
            except Exception:  # one broken run must not stop the others
                log.exception("cannot follow job run %d", run_id)

    def sync_run(self, run_id: int) -> None:
        with self.lock:
            remove: Optional[str] = None
            with self.db.session() as s:
                run = s.get(JobRun, run_id)
                if run is None:
                    return
                if run.status in ACTIVE_STATUSES:
                    self._poll(s, run)
                    if run.status in FINAL_STATUSES:
                        remove = run.workload_id
            if remove:
                self.follower.remove(remove)
            self._follow_up_if_final(run_id)

    def _poll(self, s: Session, run: JobRun) -> None:
        if run.workload_id is None:
            self._adopt_or_launch(s, run)
            return
        status = self._status(run)
        if status is None:
            return
        if not status.final:
            run.node = run.node or status.node
            if status.state == RUNNING and run.status == "queued":
                run.status = "running"
            self._copy_logs(run, final=False)
            limit = self.timeout(run.job)
            if run.stop_requested is None and limit and run.started_at \
                    and self.clock() - run.started_at > limit:
                run.stop_requested = "timeout"
                s.commit()  # the intent survives a crash during the stop
            if run.stop_requested is None:
                return
            self._stop_workload(run.workload_id)
            status = self._status(run)
            if status is None or not status.final:
                return
        self._copy_logs(run, final=True)
        self._finish(run, status)

    def _status(self, run: JobRun) -> Optional[WorkloadStatus]:
        assert run.workload_id is not None
        return self.follower.status(run.workload_id, "run %d" % run.id)

    def _adopt_or_launch(self, s: Session, run: JobRun) -> None:
        """A queued run without workload: the master died while launching it."""
        try:
            refs = self.orchestrator.list({RUN_LABEL: str(run.id)})
        except OrchestratorError as e:
            log.warning("cannot list workloads for run %d: %s", run.id, e)
            return
        if refs:
            run.workload_id, run.started_at = refs[0].id, run.started_at or self.clock()
        else:
            self._launch(s, run)

    def _finish(self, run: JobRun, status: WorkloadStatus) -> None:
        run.node = run.node or status.node
        final, reason = oneshot.outcome(status, run.stop_requested, run.reason,
                                        self.timeout(run.job))
        self._end(run, final, reason, status.exit_code, oneshot.naive_utc(status.finished_at))

    def _copy_logs(self, run: JobRun, final: bool) -> None:
        assert run.workload_id is not None
        self.follower.copy_logs(run.id, run.workload_id, self.log_file(run), final)
        folder = engine_dir(self.settings, engine_name(run))
        outputs.collect(folder, outputs_file(self.settings.data_dir, run), final)
        if final:
            outputs.remove(folder)
            script.remove(folder)

    # --- after a run
    def _follow_up_if_final(self, run_id: int) -> None:
        with self.lock:
            with self.db.session() as s:
                run = s.get(JobRun, run_id)
                if run is None or run.finalized or run.status not in FINAL_STATUSES:
                    return
                job = run.job
                children: List[int] = []
                if run.status == "succeeded":
                    for child in s.scalars(select(Job).where(
                            Job.parent_job_id == job.id, Job.schedule_kind == "dependent",
                            Job.enabled.is_(True)).order_by(Job.id)):
                        started = s.scalar(select(JobRun.id).where(
                            JobRun.job_id == child.id, JobRun.parent_run_id == run.id))
                        if started is None:
                            children.append(child.id)
                mail = notify.wanted(run.status, job.notify_on or [], job.recipients or [])
                if mail:
                    text = notify.body(job.name, job.project.name, run.id, run.status,
                                       run.exit_code, run.reason, run.started_at,
                                       run.finished_at, tail(self.log_file(run)))
                    message = (list(job.recipients), notify.subject(job.name, run.status), text)
            for child_id in children:
                try:
                    self.start_run(child_id, "parent", parent_run_id=run_id)
                except Exception:
                    log.exception("cannot start dependent job %d after run %d", child_id, run_id)
            if mail:
                notify.send(self.settings, *message)
            with self.db.session() as s:
                run = s.get(JobRun, run_id)
                if run is not None:
                    run.finalized = True
