"""Tables of the experiments feature (migration: versions/0004_experiments.py).

An experiment run is one script run with arguments against a snapshot of the project's files.
Its metrics (last value per name) and tracked files are copied here from what the engine's
`cdsw` library recorded, so listing and comparing runs needs no file access.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .models import Base, Project, User, utcnow

ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("succeeded", "failed", "timed_out", "stopped", "lost")
RUN_STATUSES = ACTIVE_STATUSES + FINAL_STATUSES


class ExperimentRun(Base):
    __tablename__ = "experiment_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    script: Mapped[str] = mapped_column(String(1024))  # relative to the project folder
    # cdsw: a script the runner launches; mlflow: a run an MLflow client opened through the
    # tracking API (store/mlflow_models.py), never launched or followed by the runner
    tracker: Mapped[str] = mapped_column(String(16), default="cdsw", server_default="cdsw")
    arguments: Mapped[str] = mapped_column(Text, default="")  # split like a shell would
    comment: Mapped[str] = mapped_column(Text, default="")
    engine_image_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("engine_images.id", ondelete="SET NULL"), nullable=True)
    profile_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("engine_profiles.id", ondelete="SET NULL"), nullable=True)
    # None: the site's job default (job_default_timeout_minutes); 0: no timeout
    timeout_minutes: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    exit_code: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    workload_id: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    node: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    stop_requested: Mapped[Optional[str]] = mapped_column(String(16), nullable=True)  # user|timeout
    # tracked files copied into the artifacts and the snapshot dropped; redone until set
    finalized: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    metrics: Mapped[Any] = mapped_column(JSON, default=dict)  # name -> last value
    files: Mapped[Any] = mapped_column(JSON, default=list)  # [{"path", "size"}] tracked files
    snapshot: Mapped[Any] = mapped_column(JSON, default=dict)  # files, bytes, skipped
    launched_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    project: Mapped[Project] = relationship()
    launched_by: Mapped[Optional[User]] = relationship()
