"""Permission-matrix rows for the Open Inference Protocol (/v2); see test_permissions_matrix.py.

Health is public. A model is reached with its access key only (as a Bearer token or the
accessKey parameter): no sign-in, cookie or API key counts, so every caller of the matrix, who
holds none, gets 401."""

from __future__ import annotations

from typing import Any, Callable, Dict, Set

ROWS = """
# --- Open Inference Protocol: public health; models need their access key
GET    /v2/health/live                                       ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
GET    /v2/health/ready                                      ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok     ok
GET    /v2/models/{name}                                     401    401    401    401    401    401    401    401    401    401    401    401
GET    /v2/models/{name}/ready                               401    401    401    401    401    401    401    401    401    401    401    401
POST   /v2/models/{name}/infer                               401    401    401    401    401    401    401    401    401    401    401    401
"""

DESTRUCTIVE: Set[str] = set()


def seed(as_: Callable[[str], Any], ids: Dict[str, int]) -> None:
    """Nothing: the rows need no object."""


def path_values(caller: str, ids: Dict[str, Any], project: str) -> Dict[str, Any]:
    return {}
