"""Logging to stdout/stderr (the cluster managers capture it) with secrets redacted."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from typing import Iterable, List, Optional

# key=value, "key": "value" and URL passwords, whatever the secret
_PATTERNS = [
    re.compile(r"(?i)((?:password|passwd|secret|token|api[_-]?key|access[_-]?key)[\"']?\s*[:=]\s*[\"']?)"
               r"([^\s\"',&]+)"),
    re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)"),
    re.compile(r"(?i)(authorization:\s*bearer\s+)(\S+)"),
]


class RedactingFilter(logging.Filter):
    """Masks known secret values and anything shaped like a credential."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets: List[str] = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4 and secret not in self.secrets:
            self.secrets.append(secret)
            self.secrets.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "****")
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + "****" + (m.group(3) if m.lastindex == 3 else ""),
                               text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


REDACTOR = RedactingFilter()


# A role started by a cluster manager also logs to a rotated file the manager knows (the SDL's
# logging block: CM's log viewer and search read DIR/FILE; Ambari's cdsw_log_dir).
LOG_FILE_ENV = "CDSW_LOG_FILE"
LOG_MAX_MB_ENV = "CDSW_LOG_MAX_MB"  # rotate at this size (default 100 MB)
LOG_BACKUPS_ENV = "CDSW_LOG_BACKUPS"  # rotated files kept (default 10)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else default


def file_handler(formatter: logging.Formatter) -> Optional[logging.Handler]:
    """A size-rotated handler on $CDSW_LOG_FILE, or None when it is not set."""
    path = os.environ.get(LOG_FILE_ENV, "").strip()
    if not path:
        return None
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=_env_int(LOG_MAX_MB_ENV, 100) * 1024 * 1024,
        backupCount=_env_int(LOG_BACKUPS_ENV, 10), encoding="utf-8")
    handler.setFormatter(formatter)
    return handler


def setup_logging(level: str = "info", secrets: Iterable[str] = ()) -> None:
    for s in secrets:
        REDACTOR.add(s)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(REDACTOR)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        if isinstance(h, logging.FileHandler):
            h.close()
    root.addHandler(handler)
    to_file = file_handler(formatter)
    if to_file is not None:
        to_file.addFilter(REDACTOR)
        root.addHandler(to_file)
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    # uvicorn's loggers propagate to the root handler so they are redacted too
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
