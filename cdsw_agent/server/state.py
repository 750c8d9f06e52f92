"""What the running server holds: settings, database, password hasher. One per app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ..security.passwords import Passwords
from ..settings import Settings
from ..store.db import Database


@dataclass
class ServerState:
    settings: Settings
    db: Database
    passwords: Passwords
    extras: Dict[str, Any] = field(default_factory=dict)  # later subsystems hang here
    # in an HTTP worker of a master with several: its client of the controller
    # (server/controller_client.py); None in the process that controls
    controller: Optional[Any] = None

    @classmethod
    def create(cls, settings: Settings, db: Database | None = None) -> "ServerState":
        return cls(settings=settings, db=db or Database(settings.database_url),
                   passwords=Passwords(settings.argon2_time_cost, settings.argon2_memory_kib))
