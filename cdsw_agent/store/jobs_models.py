"""Jobs and their runs. Declared on the shared Base; the schema comes from migrations 0002,
0006 (who a job's scheduled runs act as) and 0013 (the script version they run)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .models import Base, Project, User, utcnow

SCHEDULE_KINDS = ("manual", "cron", "dependent")
TRIGGERS = ("manual", "schedule", "parent", "catch-up")
NOTIFY_EVENTS = ("success", "failure", "timeout", "stop")
ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("succeeded", "failed", "timed_out", "stopped", "lost", "skipped")
RUN_STATUSES = ACTIVE_STATUSES + FINAL_STATUSES


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(100))
    script: Mapped[str] = mapped_column(String(1024))  # relative to the project folder
    arguments: Mapped[str] = mapped_column(Text, default="")  # split like a shell would
    engine_image_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("engine_images.id", ondelete="SET NULL"), nullable=True)
    profile_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("engine_profiles.id", ondelete="SET NULL"), nullable=True)
    env: Mapped[Any] = mapped_column(JSON, default=dict)
    # None: the site default (job_default_timeout_minutes); 0: no timeout
    timeout_minutes: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    schedule_kind: Mapped[str] = mapped_column(String(16), default="manual")
    cron: Mapped[str] = mapped_column(String(255), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    parent_job_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True)
    recipients: Mapped[Any] = mapped_column(JSON, default=list)
    notify_on: Mapped[Any] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    # scheduled and dependent runs act as the person who last changed what the job runs
    # (jobs/identity.py), since that change
    run_as_user_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    run_as_since: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    # SHA-256 of the script's bytes when run_as saved the job: the only version its scheduled
    # and dependent runs run (None: saved before migration 0013; the next such run records it)
    script_sha256: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    # the cron fire time last handled (run, skipped or caught up), naive UTC
    last_scheduled_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    project: Mapped[Project] = relationship()
    created_by: Mapped[Optional[User]] = relationship(foreign_keys=[created_by_id])
    run_as: Mapped[Optional[User]] = relationship(foreign_keys=[run_as_user_id])
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_job_project_name"),)


class JobRun(Base):
    __tablename__ = "job_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    exit_code: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    workload_id: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    node: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    stop_requested: Mapped[Optional[str]] = mapped_column(String(16), nullable=True)  # user|timeout
    # follow-ups (dependent jobs, mail) done; redone after a master restart until set
    finalized: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    triggered_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    parent_run_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("job_runs.id", ondelete="SET NULL"), nullable=True, index=True)
    # whom the run acts as, fixed when it is recorded (jobs/identity.py)
    run_as_user_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    log_path: Mapped[str] = mapped_column(String(1024), default="")  # relative to data_dir
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    job: Mapped[Job] = relationship()
    triggered_by: Mapped[Optional[User]] = relationship(foreign_keys=[triggered_by_id])
    run_as: Mapped[Optional[User]] = relationship(foreign_keys=[run_as_user_id])
