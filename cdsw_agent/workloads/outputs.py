"""Rich outputs of one-shot runs: where the engine writes them and how the master keeps them.

A job's script runs in the engine's kernel (engine/job.py), which appends every rich output
(an HTML table, a PNG, a plotly figure) as one JSON line to `outputs.ndjson` in a folder of the
run's own, made by the master under the engine's host directory on the shared storage and
mounted into the engine (the path itself with the local backend). The master copies that file
next to the run's log while the run lasts and once more at its end, then removes the folder.

The file is written by the run's code, so the master treats it as hostile: it is opened without
following a symbolic link, at most MAX_BYTES are kept, and only well-formed lines with known
MIME types are served back.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..orchestrators import Mount, WorkloadSpec

OUTPUTS_FILE = "outputs.ndjson"
ENGINE_OUTPUTS_DIR = "/var/lib/cdsw/outputs"  # where swarm engines see their folder
OUTPUTS_VARIABLE = "CDSW_OUTPUTS_FILE"  # read by engine/job.py
MAX_BYTES = 32 * 2**20
MIME_TYPES = ("text/plain", "text/html", "image/png", "image/jpeg", "image/svg+xml",
              "application/vnd.plotly.v1+json")


def engine_folder(engine_dir: Path) -> Path:
    return engine_dir / "outputs"


def attach(spec: WorkloadSpec, engine_dir: Path, local: bool) -> Path:
    """Makes the run's outputs folder (writable by the engine's user only) and points the
    engine at it; the folder on the master's side."""
    from ..projects.storage import engine_owner

    folder = engine_folder(engine_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = engine_owner()
    if owner is not None:
        os.chown(folder, owner, owner)
    if local:
        spec.env[OUTPUTS_VARIABLE] = str(folder / OUTPUTS_FILE)
    else:
        spec.mounts.append(Mount(str(folder), ENGINE_OUTPUTS_DIR))
        spec.env[OUTPUTS_VARIABLE] = ENGINE_OUTPUTS_DIR + "/" + OUTPUTS_FILE
    return folder


def collect(engine_dir: Path, target: Path, final: bool = False) -> None:
    """Copies the engine's outputs file to `target` (atomically), at most MAX_BYTES of it and
    never through a symbolic link; nothing when the engine wrote none. While the run lasts, a
    file not modified since the last copy is not copied again; the final copy always is (the
    shared storage's clock may lag the master's)."""
    source = engine_folder(engine_dir) / OUTPUTS_FILE
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return
        try:  # unchanged since the last copy (the master follows runs every few seconds)
            if not final and target.stat().st_mtime_ns > info.st_mtime_ns:
                return
        except FileNotFoundError:
            pass
        data = f.read(MAX_BYTES)
    if b"\n" in data:
        data = data[:data.rindex(b"\n") + 1]  # complete lines only
    else:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def remove(engine_dir: Path) -> None:
    shutil.rmtree(engine_folder(engine_dir), ignore_errors=True)


def clean(item: Any) -> Optional[Dict[str, Any]]:
    """One output as the API serves it, or None for a line that is not one."""
    if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
        return None
    data = {k: v for k, v in item["data"].items() if k in MIME_TYPES
            and isinstance(v, (str, dict, list))}
    return {"type": "display_data", "data": data} if data else None


def read(path: Path) -> List[Dict[str, Any]]:
    """The outputs kept with a run, in order."""
    try:
        with open(path, "rb") as f:
            lines = f.read(MAX_BYTES).splitlines()
    except FileNotFoundError:
        return []
    out: List[Dict[str, Any]] = []
    for line in lines:
        try:
            item = clean(json.loads(line))
        except ValueError:
            continue
        if item is not None:
            out.append(item)
    return out
