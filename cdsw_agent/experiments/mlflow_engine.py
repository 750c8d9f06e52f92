"""What an engine needs so that `import mlflow; mlflow.log_metric(...)` works with no setup:
the master's MLflow tracking API, a short-lived API key of the acting user (the engine's
launcher, the identity the engine carries), and the project's own experiment as the default.

Model replicas act as nobody and get none. The key is an ordinary API key of the user, named
after the engine, visible (and revocable) on the user's account page; it expires after
TOKEN_HOURS, which bounds what a leaked engine environment is worth.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any, Dict

from sqlalchemy.orm import Session

from ..health.master_checks import master_url
from ..security import tokens
from ..store.models import ApiKey, utcnow
from . import mlflow_store

TOKEN_HOURS = 24
KINDS = ("session", "job", "experiment")


def variables(db: Session, settings: Any, kind: str, name: str, project: Any,
              launcher: Any) -> Dict[str, str]:
    """MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN and MLFLOW_EXPERIMENT_NAME for an engine
    (none for a model replica or an engine that acts as nobody); adds the key to `db`."""
    if kind not in KINDS or launcher is None:
        return {}
    key = tokens.new_token(tokens.API_KEY_PREFIX)
    db.add(ApiKey(user_id=launcher.id, prefix=key[:12], key_hash=tokens.digest(key),
                  name=("engine %s %s" % (name, secrets.token_hex(3)))[-100:],
                  scope=tokens.MLFLOW_SCOPE,  # /mlflow only: it sits in the engine's environment
                  expires_at=utcnow() + dt.timedelta(hours=TOKEN_HOURS)))
    return {"MLFLOW_TRACKING_URI": master_url(settings) + "/mlflow",
            "MLFLOW_TRACKING_TOKEN": key,
            "MLFLOW_EXPERIMENT_NAME": mlflow_store.project_experiment_name(project)}
