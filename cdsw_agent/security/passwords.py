"""Password hashing with argon2id; parameters come from the settings."""

from __future__ import annotations

import functools
import secrets
import string
from typing import FrozenSet

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# A hash to verify against when the user does not exist, so timing does not reveal usernames.
_DUMMY_PASSWORD = "not-a-real-password"


class Passwords:
    def __init__(self, time_cost: int = 3, memory_kib: int = 65536):
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._dummy = self._hasher.hash(_DUMMY_PASSWORD)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._dummy, password) and bool(stored_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)


def generate_password(length: int = 20) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def check_strength(password: str, min_length: int) -> str | None:
    """None when acceptable, else what is wrong (one line)."""
    if len(password) < min_length:
        return "password must be at least %d characters long" % min_length
    if len(password) > 1024:
        return "password must be at most 1024 characters long"
    if password.strip() != password:
        return "password must not start or end with spaces"
    if password.lower() in common_passwords():
        return "this password is on a list of the most common passwords; choose another"
    return None


@functools.lru_cache(maxsize=1)
def common_passwords() -> FrozenSet[str]:
    """The 30,000 most common passwords of zxcvbn's list (lower case)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])
