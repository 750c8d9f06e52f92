"""Tables of the models feature (migration: see migrations/versions)."""

from __future__ import annotations
