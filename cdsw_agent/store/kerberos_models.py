"""Users' Kerberos credentials (migration 0008). The password or keytab is stored only
encrypted (cdsw_agent/kerberos/credentials.py) with a key kept outside the database."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import DateTime, ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, utcnow

KINDS = ("password", "keytab")


class KerberosCredential(Base):
    __tablename__ = "kerberos_credentials"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    principal: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # password | keytab
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet token of the password/keytab
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ticket_expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    renew_until: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    last_renewed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_error_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
