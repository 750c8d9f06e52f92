"""Permission-matrix rows and seed data for the models routes; see test_permissions_matrix.py."""

from __future__ import annotations

from typing import Any, Callable, Dict, Set

# rows in the MATRIX format of test_permissions_matrix.py (same columns)
ROWS = """
"""

# "METHOD /path" keys that change the world and must run against a fresh copy
DESTRUCTIVE: Set[str] = set()


def seed(as_: Callable[[str], Any], ids: Dict[str, int]) -> None:
    """Create this feature's objects in the template world; record their ids in `ids`.

    as_(caller_name) is an API-key TestClient of that user ("padmin" owns P, "tadmin" TP)."""


def path_values(caller: str, ids: Dict[str, int], project: str) -> Dict[str, Any]:
    """Values for this feature's path parameters; project is "P" or "TP" (the caller's target)."""
    return {}
