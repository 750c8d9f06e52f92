"""The running `cdsw standalone` instance, for the commands run next to it (`cdsw status`,
`cdsw health`, ...): where it listens, its data dir and the backend it really uses.

`cdsw standalone` writes its effective settings to DATA_DIR/run/instance.properties (0600: it holds
secrets) and a small record naming that file at a well-known place: /run/cdsw/instance.json for
root, else $XDG_RUNTIME_DIR/cdsw/instance.json or ~/.local/state/cdsw/instance.json
($CDSW_INSTANCE_FILE names another place). A command
given no configuration of its own (no --conf/--properties, no CDSW_CONF/CDSW_PROPERTIES, no
/etc/cdsw/config files, no CDSW_* settings in the environment) reads the instance's settings.
The record is ignored once its process has gone.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from ..render import render
from ..settings import Settings
from ..settings.loader import DEFAULT_CONF, DEFAULT_PROPERTIES
from ..settings.schema import BY_ENV


def pointer_path() -> Path:
    if os.environ.get("CDSW_INSTANCE_FILE"):  # another place (tests, several instances)
        return Path(os.environ["CDSW_INSTANCE_FILE"])
    if os.geteuid() == 0:
        return Path("/run/cdsw/instance.json")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "cdsw" / "instance.json"
    return Path.home() / ".local" / "state" / "cdsw" / "instance.json"


def _alive(pid: int) -> bool:
    try:
        cmdline = Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return False
    return b"standalone" in cmdline.split(b"\0")  # the pid was not reused by another program


def read(path: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The live instance's record, or None."""
    path = path or pointer_path()
    try:
        record = json.loads(path.read_text())
        pid = int(record["pid"])
        properties = Path(record["properties"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid) or not properties.is_file():
        return None
    return record


def _write_private(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def register(settings: Settings, path: Optional[Path] = None) -> Optional[Path]:
    """Record this process as the instance; returns the record's path, or None when another
    live instance holds it already (that one stays what `cdsw status` reads)."""
    path = path or pointer_path()
    properties = Path(settings.data_dir) / "run" / "instance.properties"
    _write_private(properties, render("cdsw.properties.j2", settings, reveal_secrets=True), 0o600)
    other = read(path)
    if other is not None and int(other["pid"]) != os.getpid():
        return None
    record = {"pid": os.getpid(), "base_url": settings.base_url, "http_port": settings.http_port,
              "bind_address": settings.bind_address, "data_dir": settings.data_dir,
              "orchestrator": settings.orchestrator, "properties": str(properties),
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_private(path, json.dumps(record, indent=2) + "\n", 0o644)
    return path


def unregister(path: Path) -> None:
    """Remove the record if it is still ours."""
    try:
        if int(json.loads(path.read_text())["pid"]) == os.getpid():
            path.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass


def configured_elsewhere(conf: Optional[str], properties: Optional[str],
                         environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when the command has a configuration of its own, which wins over the instance."""
    env = os.environ if environ is None else environ
    if conf or properties or Path(DEFAULT_CONF).exists() or Path(DEFAULT_PROPERTIES).exists():
        return True
    return any(var in BY_ENV for var in env)


def discovered_properties(conf: Optional[str], properties: Optional[str]) -> Optional[str]:
    """The running instance's properties file when the command has no configuration of its own."""
    if configured_elsewhere(conf, properties):
        return None
    record = read()
    return record["properties"] if record else None
