"""The console transcript of a session: inputs, outputs and events, one JSON object per line
under DATA_DIR/sessions/ID/transcript.ndjson, so the console stays readable after the engine
is gone. Writes are whole lines under a lock, so concurrent executions never interleave a line."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any, Dict, Tuple

_lock = threading.Lock()


def session_dir(data_dir: Any, session_id: int) -> Path:
    return Path(data_dir) / "sessions" / str(session_id)


def transcript_file(data_dir: Any, session_id: int) -> Path:
    return session_dir(data_dir, session_id) / "transcript.ndjson"


def append(data_dir: Any, session_id: int, entry: Dict[str, Any]) -> None:
    record = dict(entry, at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"))
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    path = transcript_file(data_dir, session_id)
    with _lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)


def read(data_dir: Any, session_id: int, offset: int, limit: int) -> Tuple[bytes, int]:
    """Whole lines from byte `offset` (at most about `limit` bytes) and the next offset."""
    try:
        with open(transcript_file(data_dir, session_id), "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return b"", offset
    if not data.endswith(b"\n"):
        cut = data.rfind(b"\n")
        data = data[:cut + 1] if cut >= 0 else b""
    return data, offset + len(data)
