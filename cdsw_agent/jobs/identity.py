"""Whom a job run acts as (HADOOP_USER_NAME, CDSW_USER and everything the engine derives from
its launcher, workloads/engine.py).

- A run a person starts (POST .../runs) acts as that person.
- A scheduled, catch-up or dependent run acts as the person who last changed what the job runs
  (RUN_FIELDS: script, arguments, environment, engine image, profile, timeout, schedule, parent),
  recorded on the job as run_as since run_as_since. Renaming a job, or changing its mail or
  pausing it, does not change whom it acts as. So a Contributor who points the owner's job at
  their own script makes its scheduled runs act as the Contributor, never as the owner.
- The identity is fixed on the run when it is recorded: a run launched again after a master
  restart acts as the same person. A run whose person was removed or deactivated does not start.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional, Tuple

from ..store.jobs_models import Job, JobRun
from ..store.models import User

# what a job runs: a change to any of these makes the changer the one scheduled runs act as
RUN_FIELDS = ("script", "arguments", "env", "engine_image_id", "profile_id", "timeout_minutes",
              "cron", "timezone", "schedule_kind", "parent_job_id")


def what_runs(job: Job) -> Tuple[Any, ...]:
    return tuple(dict(job.env or {}) if f == "env" else getattr(job, f) for f in RUN_FIELDS)


def changed_hands(job: Job, user: User, before: Optional[Tuple[Any, ...]],
                  now: dt.datetime) -> bool:
    """After `user` created the job (before=None) or changed it (before = what_runs() then):
    when what it runs changed, its scheduled runs act as `user` from now on. True when the
    job's identity was (re)set."""
    if before is not None and before == what_runs(job):
        return False
    if before is not None and job.run_as_user_id == user.id:
        return False  # the same person changed it again: since stays the first change
    job.run_as_user_id, job.run_as_since = user.id, now
    job.run_as = user
    return True


def acting_user_id(job: Job, trigger: str, user_id: Optional[int]) -> Optional[int]:
    """Whom a new run of the job acts as: the person who starts it, else the job's run_as."""
    return user_id if trigger == "manual" else job.run_as_user_id


def refusal(run: JobRun) -> str:
    """Why the run may not start as its person ("" when it may)."""
    user: Optional[User] = run.run_as
    if user is None:
        if run.trigger == "manual":
            return "this run has no user to act as; start it again"
        return ("job %s has no user to act as (whoever last changed it was removed); edit and "
                "save the job so its scheduled runs act as you" % run.job.name)
    if not user.is_active:
        return ("job %s runs as %s, whose account is deactivated; edit and save the job so its "
                "scheduled runs act as you" % (run.job.name, user.username))
    return ""
