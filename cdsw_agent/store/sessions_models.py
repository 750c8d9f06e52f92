"""Tables of the sessions feature (migration: see migrations/versions)."""

from __future__ import annotations
