"""Tables of the models feature: models, their builds, deployments, replicas and access keys.

Declared on the shared Base; the schema comes from migrations 0005 and 0006 (who a
deployment's replicas act as). Access keys are stored as
SHA-256 digests only; a replica's token (what the master presents to the replica server) is
kept in clear because the master must send it again after a restart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .models import Base, Project, User, utcnow

BUILD_ACTIVE = ("queued", "building")
BUILD_STATUSES = BUILD_ACTIVE + ("succeeded", "failed")
# deployment: deploying (replicas coming up or being replaced), deployed (all of the target
# build answer), failed (a replica of the target build cannot load the function), stopped
DEPLOYMENT_ACTIVE = ("deploying", "deployed", "failed")
DEPLOYMENT_STATUSES = DEPLOYMENT_ACTIVE + ("stopped",)
# replica: starting (launched, not answering yet), ready (answers, gets traffic), draining
# (no new traffic; stopped once its requests are done), failed, stopped
REPLICA_LIVE = ("starting", "ready", "draining")
REPLICA_STATES = REPLICA_LIVE + ("failed", "stopped")


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    file: Mapped[str] = mapped_column(String(1024))  # relative to the project folder
    function: Mapped[str] = mapped_column(String(255))
    example_input: Mapped[Any] = mapped_column(JSON, nullable=True)
    engine_image_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("engine_images.id", ondelete="SET NULL"), nullable=True)
    created_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    project: Mapped[Project] = relationship()
    created_by: Mapped[Optional[User]] = relationship()
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_model_project_name"),)


class ModelBuild(Base):
    __tablename__ = "model_builds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    # what the build serves, fixed at build time
    file: Mapped[str] = mapped_column(String(1024))
    function: Mapped[str] = mapped_column(String(255))
    # the image (swarm) or the snapshot directory relative to data_dir (local)
    artifact: Mapped[str] = mapped_column(String(1024), default="")
    log_path: Mapped[str] = mapped_column(String(1024), default="")  # relative to data_dir
    created_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    model: Mapped[Model] = relationship()
    created_by: Mapped[Optional[User]] = relationship()


class ModelDeployment(Base):
    __tablename__ = "model_deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("model_builds.id", ondelete="CASCADE"),
                                          index=True)
    replicas: Mapped[int] = mapped_column(Integer, default=1)  # desired
    profile_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("engine_profiles.id", ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="deploying", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    # whoever last deployed or redeployed it: its replicas act as this user
    deployed_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    deployed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    stopped_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    model: Mapped[Model] = relationship()
    build: Mapped[ModelBuild] = relationship()
    created_by: Mapped[Optional[User]] = relationship(foreign_keys=[created_by_id])
    deployed_by: Mapped[Optional[User]] = relationship(foreign_keys=[deployed_by_id])


class ModelReplica(Base):
    __tablename__ = "model_replicas"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("model_deployments.id", ondelete="CASCADE"), index=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("model_builds.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255), unique=True)
    workload_id: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="starting", index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    port: Mapped[int] = mapped_column(Integer)
    node: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    address: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    token: Mapped[str] = mapped_column(String(128))
    # whom the replica acts as: its deployment's deployer when it was launched
    run_as_user_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ready_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    stopped_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    deployment: Mapped[ModelDeployment] = relationship()
    run_as: Mapped[Optional[User]] = relationship()


class ModelAccessKey(Base):
    __tablename__ = "model_access_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
