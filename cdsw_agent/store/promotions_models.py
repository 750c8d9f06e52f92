"""Promotions: a reviewed copy of what runs (files, job and model definitions) from a project on
one cluster to a project on another (cdsw_agent/clusters/promotion.py holds the rules)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, utcnow

# pending -> approved (applied) -> rolled_back; pending -> rejected
PROMOTION_STATES = ("pending", "approved", "rejected", "rolled_back")


class Promotion(Base):
    __tablename__ = "promotions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    target_project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    note: Mapped[str] = mapped_column(Text, default="")
    # what the request froze: {"files": {path: sha256}, "jobs": [...], "models": [...]};
    # the files themselves are under DATA_DIR/promotions/<id>/snapshot
    snapshot: Mapped[Any] = mapped_column(JSON, default=dict)
    # the target as it was just before this promotion was applied (what a rollback restores),
    # its files under DATA_DIR/promotions/<id>/before
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    result: Mapped[Any] = mapped_column(JSON, default=dict)  # what applying changed
    requested_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    reviewed_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    reviewed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    review_note: Mapped[str] = mapped_column(Text, default="")
    rolled_back_by_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    rolled_back_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
