"""The master's scheduler: a background thread that follows job runs and starts cron jobs.

Each tick (every few seconds) it polls active runs through the job runner (log copying,
timeouts, results, dependent jobs, mail), then starts the cron jobs that are due: a job whose
previous run is still active gets a "skipped" run instead, and fire times missed while the
master was down are made up by one catch-up run. The clock is injectable for tests.

Between ticks the thread sleeps until whichever comes first: the next tick, or the moment a
cron job needs it (known from the last look at the jobs), instead of up to a tick later. A tick
is timed from the start of the previous one, so a slow tick does not make the schedule drift.

A cron run starts ahead: PRESTART_SECONDS before its fire time the run is recorded and its
engine launched, with the fire time as the moment its script starts (jobs/launch.py,
engine/job.py), so the container, the interpreter and a Python job's kernel come up
beforehand and the script starts on the second. The engine is the run's own, made for the
person it acts as, exactly as at the fire time. A job whose previous run is still active then
is decided at the fire time, as before (it may end meanwhile).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any, List, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..experiments.runner import ExperimentRunner
from ..jobs import schedule
from ..jobs.runner import Clock, JobRunner
from ..loops import Loop
from ..orchestrators import OrchestratorError, shared_orchestrator
from ..models import service as model_service
from ..kerberos import tickets as kerberos_tickets
from ..sessions import monitor as session_monitor
from ..store.jobs_models import ACTIVE_STATUSES, Job, JobRun
from ..store.models import utcnow
from .state import ServerState

log = logging.getLogger(__name__)
RUNNER_KEY, SCHEDULER_KEY = "jobs.runner", "jobs.scheduler"
EXPERIMENTS_KEY = "experiments.runner"
DEFAULT_INTERVAL = 2.0
FIRE_SLACK_SECONDS = 0.002  # wake this much after a fire time, so that it is due
# a cron run's engine starts this long before its fire time: a container and a kernel start
# in 1-3 s on a busy 2-core node
PRESTART_SECONDS = 5.0
_create_lock = threading.Lock()
_orchestrator = shared_orchestrator  # the one orchestrator client of the server


def runner_for(state: ServerState, clock: Optional[Clock] = None) -> JobRunner:
    """The one job runner of this server (created on first use, sharing the orchestrator)."""
    with _create_lock:
        runner = state.extras.get(RUNNER_KEY)
        if runner is None:
            runner = state.extras[RUNNER_KEY] = JobRunner(
                state.db, state.settings, lambda: _orchestrator(state), clock or utcnow)
        return runner


def experiments_for(state: ServerState) -> ExperimentRunner:
    """The one experiment runner of this server (created on first use, sharing the
    orchestrator); the scheduler's tick follows its runs too."""
    with _create_lock:
        runner = state.extras.get(EXPERIMENTS_KEY)
        if runner is None:
            runner = state.extras[EXPERIMENTS_KEY] = ExperimentRunner(
                state.db, state.settings, lambda: _orchestrator(state))
        return runner


def stop_project_workloads(state: ServerState, project_id: int, who: str) -> None:
    """Before a project is deleted: no engine of any kind outlives it."""
    from ..store.models_models import Model

    runner_for(state).stop_project_runs(project_id, who)
    experiments_for(state).stop_project_runs(project_id, who)
    session_monitor.manager_for(state).stop_project_sessions(project_id, who)
    with state.db.session() as s:
        model_ids = list(s.scalars(select(Model.id).where(Model.project_id == project_id)))
    service = model_service.service_for(state)
    for model_id in model_ids:
        service.stop_model(model_id)


class Scheduler:
    def __init__(self, runner: JobRunner, interval: float = DEFAULT_INTERVAL):
        self.runner, self.interval = runner, interval
        self.followers: List[Any] = []  # other runners whose sync() each tick calls
        self.prestart = dt.timedelta(seconds=PRESTART_SECONDS)
        # when a cron job next needs the scheduler (clock's time): a fire time, or the
        # moment its run starts ahead of it
        self.next_wake: Optional[dt.datetime] = None
        self._loop = Loop("cdsw-job-scheduler", lambda: self.tick(), lambda: self.interval,
                          log=log, what="job scheduler", quiet=(OrchestratorError,),
                          on_error=self._forget_fire, from_start=True,
                          wake=self._until_fire, early=lambda: self.start_due())

    @property
    def clock(self) -> Clock:
        return self.runner.clock

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._loop.stop(timeout)

    def _forget_fire(self) -> None:  # a failed tick: the next one looks at the jobs again
        self.next_wake = None

    def _until_fire(self) -> Optional[float]:
        """Seconds until a cron job next needs the scheduler (the loop wakes then if before
        the tick)."""
        wake = self.next_wake
        if wake is None:
            return None
        return (wake - self.clock()).total_seconds() + FIRE_SLACK_SECONDS

    def tick(self) -> None:
        self.runner.sync()
        for follower in self.followers:
            follower.sync()
        self.start_due()

    def start_due(self) -> None:
        for job_id in self._cron_jobs():
            if self._loop.stopping:
                return
            try:
                self._consider(job_id)
            except Exception:
                log.exception("cannot schedule job %d", job_id)
        self.next_wake = self._next_wake()

    def _cron_jobs(self) -> List[int]:
        with self.runner.db.session() as s:
            return list(s.scalars(select(Job.id).where(
                Job.schedule_kind == "cron", Job.enabled.is_(True)).order_by(Job.id)))

    def _next_wake(self) -> Optional[dt.datetime]:
        """The earliest moment a cron job needs the scheduler: its next fire time not yet
        handled, less the prestart while that is still ahead."""
        now, earliest = self.clock(), None
        with self.runner.db.session() as s:
            jobs = s.execute(select(Job.cron, Job.timezone, Job.last_scheduled_at).where(
                Job.schedule_kind == "cron", Job.enabled.is_(True))).all()
        for cron, timezone, last in jobs:
            try:
                fire = schedule.next_fire(cron, timezone, max(now, last) if last else now)
            except Exception:  # a job with a broken schedule is reported by _consider
                continue
            # within the prestart and not started ahead (its previous run was still active):
            # decided at the fire time
            wake = fire - self.prestart if fire - self.prestart > now else fire
            if earliest is None or wake < earliest:
                earliest = wake
        return earliest

    def _consider(self, job_id: int) -> None:
        with self.runner.lock:  # decide and start as one step, whoever else ticks
            self._consider_locked(job_id)

    def _consider_locked(self, job_id: int) -> None:
        now = self.clock()
        with self.runner.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.schedule_kind != "cron" or not job.enabled:
                return
            if job.last_scheduled_at is None:  # counts from now: nothing before it is missed
                job.last_scheduled_at = now
                return
            due = schedule.due(job.cron, job.timezone, job.last_scheduled_at, now)
            start_at: Optional[dt.datetime] = None
            if due is None:  # a fire time within the prestart: its engine starts now
                due = schedule.due(job.cron, job.timezone, job.last_scheduled_at,
                                   now + self.prestart)
                if due is None or s.scalar(select(JobRun.id).where(
                        JobRun.job_id == job_id, JobRun.status.in_(ACTIVE_STATUSES)).limit(1)):
                    return  # nothing ahead, or decided at the fire time (skip or run)
                start_at = due.at
        fire_time: dt.datetime = due.at

        def mark(_: Session, locked_job: Job) -> None:
            locked_job.last_scheduled_at = fire_time

        if due.trigger == "catch-up":
            log.info("job %d: making up missed fire times with one run (latest %s UTC)",
                     job_id, fire_time)
        self.runner.start_run(job_id, due.trigger, in_txn=mark, start_at=start_at)


def start(state: ServerState, interval: float = DEFAULT_INTERVAL,
          clock: Optional[Clock] = None) -> Scheduler:
    """Starts this server's scheduler (once); call from the app's startup."""
    scheduler = state.extras.get(SCHEDULER_KEY)
    if scheduler is None:
        scheduler = state.extras[SCHEDULER_KEY] = Scheduler(runner_for(state, clock), interval)
        scheduler.followers.append(experiments_for(state))
    scheduler.start()
    session_monitor.start(state)  # its own thread: engine calls must not delay cron jobs
    model_service.start(state)  # its own thread too: replica health, rollouts, scaling
    kerberos_tickets.start(state)  # users' tickets renewed before they expire
    return scheduler


def stop(state: ServerState) -> None:
    """Stops the scheduler thread; running jobs keep running and are re-adopted later."""
    session_monitor.stop(state)
    kerberos_tickets.stop(state)
    model_service.stop(state)  # replicas keep running and are re-adopted later
    scheduler = state.extras.pop(SCHEDULER_KEY, None)
    if scheduler is not None:
        scheduler.stop()
