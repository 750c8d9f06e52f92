"""Model access keys: the caller's permission to call one model. Only digests are stored."""

from __future__ import annotations

from typing import Tuple

from ..security import tokens

ACCESS_KEY_PREFIX = "cdswm_"
SHOWN_PREFIX = 12  # characters kept in clear to tell keys apart in listings


def new_access_key() -> Tuple[str, str, str]:
    """(key, shown prefix, digest); the key itself is shown once and never stored."""
    key = tokens.new_token(ACCESS_KEY_PREFIX, 24)
    return key, key[:SHOWN_PREFIX], tokens.digest(key)


def digest(key: str) -> str:
    return tokens.digest(key)
