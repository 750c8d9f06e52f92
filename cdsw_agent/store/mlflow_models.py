"""Tables of the MLflow-compatible tracking API (migration: versions/0009_mlflow.py).

An MLflow experiment belongs to one project. An MLflow run IS a workbench experiment run (a row
of experiment_runs with tracker "mlflow": listed on the experiments page beside the script runs,
never launched by the runner); what MLflow adds to it lives here: params, tags and every metric
value with its step and timestamp.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .experiments_models import ExperimentRun
from .models import Base, Project, utcnow


class MlflowExperiment(Base):
    __tablename__ = "mlflow_experiments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(500), unique=True)  # OWNER/PROJECT[/NAME]
    lifecycle_stage: Mapped[str] = mapped_column(String(16), default="active")
    tags: Mapped[Any] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    project: Mapped[Project] = relationship()


class MlflowRun(Base):
    __tablename__ = "mlflow_runs"
    run_id: Mapped[int] = mapped_column(ForeignKey("experiment_runs.id", ondelete="CASCADE"),
                                        primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("mlflow_experiments.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(250), default="")
    lifecycle_stage: Mapped[str] = mapped_column(String(16), default="active")
    params: Mapped[Any] = mapped_column(JSON, default=dict)
    tags: Mapped[Any] = mapped_column(JSON, default=dict)
    start_time: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)  # ms since epoch
    end_time: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)
    run: Mapped[ExperimentRun] = relationship()
    experiment: Mapped[MlflowExperiment] = relationship()


class MlflowMetric(Base):
    __tablename__ = "mlflow_metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("experiment_runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(250))
    value: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[int] = mapped_column(BigInteger)  # ms since epoch
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    __table_args__ = (Index("ix_mlflow_metrics_run_key", "run_id", "key"),)
