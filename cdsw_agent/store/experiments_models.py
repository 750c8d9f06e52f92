"""Tables of the experiments feature (migration: see migrations/versions)."""

from __future__ import annotations
