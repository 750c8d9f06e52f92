"""The site's signing key for model bundles: Ed25519, made by the workbench on first use.

The private key is DATA_DIR/keys/model-bundles-ed25519.pem (PKCS#8, mode 0600, created with
O_EXCL so two exports at once cannot make two keys); it never leaves the master. The public key
is what edge hosts trust: `cdsw models signing-key` prints it (PEM), and `cdsw models verify`
or `run-bundle` take it with --key. A key is named by its fingerprint, "SHA256:" and the
base64 of the sha256 of its 32 raw bytes (as OpenSSH names keys).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..settings import Settings

KEY_FILE = "keys/model-bundles-ed25519.pem"


class SigningKeyError(ValueError):
    """A key file that cannot be used; str() is one line saying why."""


def key_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / KEY_FILE


def site_key(settings: Settings) -> Ed25519PrivateKey:
    """The site's private key, made (once) when there is none."""
    path = key_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        try:
            fd = os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass  # another export made it meanwhile: use that one
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError("%s is not an Ed25519 private key" % path)
    return key


def public_pem(key: Union[Ed25519PrivateKey, Ed25519PublicKey]) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def fingerprint(key: Union[Ed25519PrivateKey, Ed25519PublicKey]) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def load_public(data: bytes, where: str) -> Ed25519PublicKey:
    """A PEM public key (or a PEM private key, whose public half is used)."""
    try:
        if b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SigningKeyError("%s is not a PEM key; give the site's public key from `cdsw models "
                        "signing-key`" % where)
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("%s is not an Ed25519 key; give the site's public key from `cdsw "
                        "models signing-key`" % where)
    return key


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def signed_by(key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message)
        return True
    except (InvalidSignature, ValueError):
        return False
