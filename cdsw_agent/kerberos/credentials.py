"""Users' Kerberos credentials at rest: the password or keytab encrypted with Fernet
(AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key that is never in the database.

The key lives in kerberos_key_file, by default DATA_DIR/kerberos/credentials.key, made with
mode 0600 on first use. A database dump alone therefore reveals no password or keytab; losing
the key file means users enter their credential again (the page says so).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ..settings import Settings


class KeyError_(Exception):
    """The key file is unusable; str() says what to do."""


def key_path(settings: Settings) -> Path:
    return Path(settings.kerberos_key_file or Path(settings.data_dir) / "kerberos" /
                "credentials.key")


def _key(settings: Settings) -> bytes:
    path = key_path(settings)
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


def encrypt(settings: Settings, secret: bytes) -> bytes:
    return Fernet(_key(settings)).encrypt(secret)


def decrypt(settings: Settings, token: bytes) -> bytes:
    try:
        return Fernet(_key(settings)).decrypt(token)
    except (InvalidToken, ValueError):
        raise KeyError_("the stored Kerberos credential cannot be decrypted with %s (the key "
                        "file was replaced or lost): enter your password or keytab again"
                        % key_path(settings))
