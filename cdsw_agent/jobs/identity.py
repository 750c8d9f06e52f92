"""Whom a job run acts as (HADOOP_USER_NAME, CDSW_USER and everything the engine derives from
its launcher, workloads/engine.py).

- A run a person starts (POST .../runs) acts as that person.
- A scheduled, catch-up or dependent run acts as the person who last changed what the job runs
  (RUN_FIELDS: script, arguments, environment, engine image, profile, timeout, schedule, parent),
  recorded on the job as run_as since run_as_since. Renaming a job, or changing its mail or
  pausing it, does not change whom it acts as. So a Contributor who points the owner's job at
  their own script makes its scheduled runs act as the Contributor, never as the owner.
- What the script holds is part of what the job runs: saving the job records the digest of its
  script (script_sha256), and a scheduled, catch-up or dependent run runs the script only while
  it is byte for byte that version. Project files are shared, so a Contributor who edits the
  owner's script (in the file editor, a session, git) never has their code run as the owner:
  the run fails saying so, and whoever saves the job next (the owner after reading the change,
  or the Contributor) approves the new version and is the one its runs act as. A run a person
  starts runs the script as it is, as that person. The engine runs the bytes the master checked,
  whatever the file holds by then (jobs/script.py).
- The job's person saving its script with the workbench's file tools (the editor, an upload)
  or in JupyterLab (whose saves pass through the master's session proxy, made by the signed-in
  person) approves their own edit: when the file held the version the job approved until their
  save, the version they saved is approved (editor_approvals). An edit on top of a version
  nobody approved (another person's) still needs the job saved, as does an edit made in a
  session by other means (a terminal, code, git), whose author the master cannot know.
- The identity is fixed on the run when it is recorded: a run launched again after a master
  restart acts as the same person. A run whose person was removed or deactivated does not start.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, List, Optional, Tuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.jobs_models import Job, JobRun
from ..store.models import User

# what a job runs: a change to any of these makes the changer the one scheduled runs act as
RUN_FIELDS = ("script", "script_sha256", "arguments", "env", "engine_image_id", "profile_id",
              "timeout_minutes", "cron", "timezone", "schedule_kind", "parent_job_id")


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


def script_refusal(run: JobRun, digest: str) -> str:
    """Why the run may not run the script whose bytes have `digest` ("" when it may). A job
    saved before its script's digest was kept (migration 0013) records it at its first such
    run, which runs what the script held, as before."""
    job = run.job
    if run.trigger == "manual":
        return ""
    if job.script_sha256 is None:
        job.script_sha256 = digest
        return ""
    if digest == job.script_sha256:
        return ""
    who = run.run_as.username if run.run_as is not None else "its person"
    kind = "dependent" if run.trigger == "parent" else "scheduled"
    return ("job %s: %s changed since %s saved the job; its %s runs act as %s and run only the "
            "version %s saved. Read the change, then save the job to approve it (its runs then "
            "act as you)" % (job.name, job.script, who, kind, who, who))


def pinned_as(db: Session, project_id: int, script: str, user_id: int) -> List[Job]:
    """The project's jobs that run `script` as `user_id`, pinned to a version of it."""
    return list(db.scalars(select(Job).where(Job.project_id == project_id, Job.script == script,
                                             Job.run_as_user_id == user_id,
                                             Job.script_sha256.is_not(None))))


def editor_approvals(db: Session, project_id: int, script: str, user_id: int,
                     before: Callable[[], str], after: Callable[[], str]) -> List[Job]:
    """`user_id` is saving `script` with the workbench's file tools (the editor, an upload) or
    in JupyterLab: bytes whose digest `after()` gives, over the version whose digest `before()`
    gives ("" when the file could not be read); both are called only when a job runs that
    script as that person. The file tools call this just before their write and commit once it
    succeeded; a JupyterLab save, once the engine wrote the file, with the digest the master
    read before passing the save on (server/script_approvals.py). The jobs of the
    project that run this script as that person and approved the version being replaced
    approve the saved one; they are returned. An edit on top of a version the job did not
    approve (another person's) approves nothing: the job's page is where someone else's change
    is read and approved."""
    jobs = pinned_as(db, project_id, script, user_id)
    if not jobs:
        return []
    replaced = before()
    approved = [job for job in jobs if replaced and job.script_sha256 == replaced]
    if approved:
        saved = after()
        for job in approved:
            job.script_sha256 = saved
    return approved
