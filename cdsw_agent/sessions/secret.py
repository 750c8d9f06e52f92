"""Engine tokens: HMAC-SHA256 of the master's session secret and the session's workload name.

Why derived rather than stored: nothing in the database (or its backups) lets anyone reach an
engine; a restarted master re-derives the token of every running session it re-adopts; and
replacing the secret file revokes every engine token at once. The workload name carries a random
part, so a session id reused after a database reset never yields an old token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

SECRET_FILE = "session-secret"
_lock = threading.Lock()


def master_secret(data_dir: Path) -> bytes:
    """The secret (created mode 0600 on first use) in the master's data directory."""
    path = Path(data_dir) / SECRET_FILE
    with _lock:
        try:
            return bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_bytes(32)
        tmp = path.with_name("." + SECRET_FILE + ".%d.tmp" % os.getpid())
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value.hex() + "\n")
        os.replace(tmp, path)
        return value


def engine_token(data_dir: Path, workload_name: str) -> str:
    mac = hmac.new(master_secret(data_dir), b"cdsw-engine:" + workload_name.encode(),
                   hashlib.sha256)
    return mac.hexdigest()
