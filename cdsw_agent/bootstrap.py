"""First-start defaults: engine profiles and the first administrator."""

from __future__ import annotations

from typing import Optional, Tuple

from sqlalchemy import func, select

from . import accounts
from .security.passwords import Passwords, generate_password
from .settings import Settings
from .store.db import Database
from .store.models import EngineProfile, User

DEFAULT_PROFILES = (("1 vCPU / 2 GiB", 1.0, 2.0), ("2 vCPU / 4 GiB", 2.0, 4.0),
                    ("4 vCPU / 8 GiB", 4.0, 8.0))


def seed_defaults(db: Database) -> None:
    with db.session() as s:
        if not s.scalar(select(func.count()).select_from(EngineProfile)):
            for name, cpu, mem in DEFAULT_PROFILES:
                s.add(EngineProfile(name=name, cpu=cpu, memory_gb=mem, gpus=0))


def ensure_first_admin(db: Database, settings: Settings,
                       username: str = "admin") -> Optional[Tuple[str, str]]:
    """Creates an administrator when no administrator exists; returns (username, password) once."""
    with db.session() as s:
        if s.scalar(select(func.count()).select_from(User).where(User.is_admin.is_(True))):
            return None
        password = generate_password()
        passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)
        accounts.create_user(s, passwords, settings, username, password, is_admin=True,
                             full_name="Administrator")
    return username, password
