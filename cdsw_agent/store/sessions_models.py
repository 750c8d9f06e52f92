"""Interactive engine sessions and who their owners share them with (migration 0003)."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .models import Base, Project, User, utcnow

KERNELS = ("python3", "r", "scala")
ACTIVE_STATUSES = ("starting", "running")
FINAL_STATUSES = ("stopped", "failed")
SHARE_MODES = ("view", "interactive")  # view: read the console; interactive: execute too


class EngineSession(Base):
    """One engine running jupyter_server for its launcher. Its engine token is never stored:
    it is derived from the master's secret and `name` (sessions/secret.py)."""
    __tablename__ = "engine_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)  # the workload name
    kernel: Mapped[str] = mapped_column(String(16))  # one of KERNELS
    kernelspec: Mapped[str] = mapped_column(String(64))  # the image's kernel for it
    engine_image_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("engine_images.id", ondelete="SET NULL"), nullable=True)
    image: Mapped[str] = mapped_column(String(512), default="")
    profile_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("engine_profiles.id", ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="starting", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    workload_id: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    node: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    host_port: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    kernel_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    stop_requested: Mapped[Optional[str]] = mapped_column(String(16), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    last_activity_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    project: Mapped[Project] = relationship()
    user: Mapped[User] = relationship()


class SessionShare(Base):
    __tablename__ = "engine_session_shares"
    session_id: Mapped[int] = mapped_column(
        ForeignKey("engine_sessions.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))  # one of SHARE_MODES
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    user: Mapped[User] = relationship()
