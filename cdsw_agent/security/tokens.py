"""Random credentials and their stored form. Only SHA-256 digests are kept in the database."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


API_KEY_PREFIX = "cdswk_"
# the scope of the API key an engine gets for MLflow tracking (experiments/mlflow_engine.py):
# it sits in the engine's environment, where a printed environment or a saved notebook output
# can show it to collaborators, so it reaches the MLflow API only (server/permissions.py)
MLFLOW_SCOPE = "mlflow"
