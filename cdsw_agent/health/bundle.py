"""The diagnostic bundle of `cdsw logs`: one tar.gz an admin can attach to a support ticket.

Everything in it is text that went through the redactor (known secret values plus anything
shaped like a credential), so the bundle can leave the cluster.
"""

from __future__ import annotations

import datetime as dt
import glob
import io
import json
import os
import platform
import socket
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .. import __version__
from ..logs import RedactingFilter
from ..settings import Settings, masked
from . import report
from .registry import REGISTRY, reason

MAX_LOG_FILES = 20  # newest first
MAX_LOG_BYTES = 2 * 1024 * 1024  # the tail of each file
LOG_SUFFIXES = (".log", ".txt", ".out", ".err")
MAX_RUN_LOGS = 20  # newest job, experiment and model-build logs
MAX_ENGINES = 10  # newest engine containers whose output is bundled
ENGINE_LOG_LINES = 500
# Where the managers put the roles' own output: Ambari's cdsw_log_dir, and the logs/ of each
# CDSW role's Cloudera Manager process directory (the newest per role type).
AMBARI_LOG_DIR = "/var/log/cdsw"
CM_PROCESS_GLOB = "/var/run/cloudera-scm-agent/process/*-cdsw-CDSW_*"
# Run logs under the data directory (jobs/runs/N.log, experiments/N/run.log, models/builds/N.log)
RUN_LOG_GLOBS = ("jobs/runs/*.log", "experiments/*/run.log", "models/builds/*.log")


def redactor_for(settings: Settings) -> RedactingFilter:
    """The logging redactor, plus this configuration's secrets and the parts of secret URLs."""
    from sqlalchemy.engine import make_url

    r = RedactingFilter(settings.secret_values())
    if settings.db_url:
        try:
            password = make_url(settings.db_url).password
        except Exception:  # an unparsable URL is redacted whole through secret_values()
            password = None
        if password:
            r.add(str(password))
    return r


class Bundle:
    """Named text files, redacted as they are added, and the errors met collecting them."""

    def __init__(self, redactor: RedactingFilter, root: str):
        self.redactor = redactor
        self.root = root
        self.files: List[Tuple[str, str]] = []
        self.errors: List[str] = []

    def add(self, name: str, text: str) -> None:
        self.files.append((name, self.redactor.redact(text)))

    def collect(self, name: str, produce: Callable[[], Optional[str]]) -> None:
        """Add produce()'s text; a failure is noted in errors.txt instead of stopping the bundle."""
        try:
            text = produce()
        except Exception as e:
            self.errors.append("%s: %s: %s" % (name, type(e).__name__, str(e).splitlines()[0]
                                               if str(e) else ""))
            return
        if text is not None:
            self.add(name, text)

    def write(self, out: Path) -> Path:
        if self.errors:
            self.add("errors.txt", "\n".join(self.errors) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        fd = os.open(str(partial), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        now = time.time()
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, text in self.files:
                data = text.encode("utf-8")
                info = tarfile.TarInfo("%s/%s" % (self.root, name))
                info.size, info.mtime, info.mode = len(data), int(now), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.replace(str(partial), str(out))
        return out


def config_text(settings: Settings) -> str:
    rows = ["%s = %s   [%s]" % (s.property_key, masked(s, v), src)
            for s, v, src in settings.items()]
    return "\n".join(rows) + "\n"


def versions_text() -> str:
    lines = ["cdsw_agent %s" % __version__, "python %s" % sys.version.replace("\n", " "),
             "platform %s" % platform.platform(), "host %s" % socket.gethostname(), "", "packages:"]
    dists = {}
    for d in metadata.distributions():
        name = d.metadata["Name"] or "?"
        dists[name.lower()] = "%s %s" % (name, d.version)
    lines.extend(dists[k] for k in sorted(dists))
    return "\n".join(lines) + "\n"


def database_text(settings: Settings) -> str:
    from .master_checks import database
    from .registry import HealthContext

    out = database(HealthContext(settings))
    return json.dumps({"status": out.status.name, "message": out.message, **out.data},
                      indent=2, default=str) + "\n"


def docker_texts(settings: Settings) -> Dict[str, str]:
    """docker version/info/ps, and nodes/services on a swarm manager."""
    import docker

    client = docker.DockerClient(base_url=settings.docker_host, timeout=3)
    try:
        out = {"docker/version.json": json.dumps(client.version(), indent=2, default=str),
               "docker/info.json": json.dumps(client.info(), indent=2, default=str)}
        rows = ["%-40s %-50s %s" % (c.name, (c.image.tags or [c.image.short_id])[0]
                                    if c.image else "?", c.status)
                for c in client.containers.list(all=True)]
        out["docker/ps.txt"] = "\n".join(rows) + "\n"
        swarm = json.loads(out["docker/info.json"]).get("Swarm") or {}
        if swarm.get("ControlAvailable"):
            out["docker/nodes.txt"] = "\n".join(
                "%s %s %s" % (n.attrs.get("Description", {}).get("Hostname", n.id),
                              n.attrs.get("Status", {}).get("State"),
                              n.attrs.get("Spec", {}).get("Availability"))
                for n in client.nodes.list()) + "\n"
            out["docker/services.txt"] = "\n".join(
                "%s %s" % (s.name, s.attrs.get("Spec", {}).get("Mode", {}))
                for s in client.services.list()) + "\n"
        return out
    finally:
        client.close()


def recent_logs(logs_dir: Path) -> List[Tuple[str, str]]:
    """(name relative to logs_dir, tail text) of the newest log files."""
    if not logs_dir.is_dir():
        return []
    files = [p for p in logs_dir.rglob("*") if p.is_file() and not p.is_symlink()
             and (p.suffix in LOG_SUFFIXES or ".log." in p.name)]
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [(str(p.relative_to(logs_dir)), _tail(p)) for p in files[:MAX_LOG_FILES]]


def role_log_dirs(extra: Iterable[Path] = ()) -> List[Tuple[str, Path]]:
    """(bundle name, directory) of the roles' logs on this host: the given ones, Ambari's log
    dir, and the newest Cloudera Manager process dir of each CDSW role type."""
    cm_glob, ambari_dir = CM_PROCESS_GLOB, AMBARI_LOG_DIR
    out = [("roles/%s" % (p.name or "extra"), p) for p in extra]
    if Path(ambari_dir).is_dir():
        out.append(("roles/ambari", Path(ambari_dir)))
    newest: Dict[str, Path] = {}
    for proc in glob.glob(cm_glob):
        path = Path(proc)
        role = path.name.split("-cdsw-", 1)[-1]
        if (path / "logs").is_dir() and (role not in newest or
                                         path.stat().st_mtime > newest[role].stat().st_mtime):
            newest[role] = path
    out += [("roles/%s" % role, path / "logs") for role, path in sorted(newest.items())]
    return out


def run_logs(data_dir: Path) -> List[Tuple[str, str]]:
    """(name under the data dir, tail) of the newest job, experiment and model-build logs."""
    files = [p for pattern in RUN_LOG_GLOBS for p in data_dir.glob(pattern)
             if p.is_file() and not p.is_symlink()]
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [(str(p.relative_to(data_dir)), _tail(p)) for p in files[:MAX_RUN_LOGS]]


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - MAX_LOG_BYTES))
        data = f.read()
    prefix = "[... first %d bytes left out ...]\n" % (size - MAX_LOG_BYTES) \
        if size > MAX_LOG_BYTES else ""
    return prefix + data.decode("utf-8", "replace")


def engine_logs(settings: Settings) -> Dict[str, str]:
    """The last lines of the newest workbench containers on this host's Docker (sessions,
    job and experiment runs, model replicas)."""
    import docker

    from ..orchestrators.base import WORKLOAD_LABEL

    client = docker.DockerClient(base_url=settings.docker_host, timeout=5)
    try:
        containers = client.containers.list(all=True, filters={"label": WORKLOAD_LABEL})
        containers.sort(key=lambda c: c.attrs.get("Created", ""), reverse=True)
        out = {}
        for c in containers[:MAX_ENGINES]:
            text = c.logs(tail=ENGINE_LOG_LINES, timestamps=True).decode("utf-8", "replace")
            out["engines/%s.log" % c.name] = "# %s %s\n%s" % (c.name, c.status, text)
        return out
    finally:
        client.close()


def default_out_dir(settings: Settings) -> Path:
    """Where a bundle goes when no --out is given: DATA_DIR/diagnostics (0700), a path on the
    host the manager's command output names, kept after the command's process dir is gone."""
    path = Path(settings.data_dir) / "diagnostics"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(str(path), 0o700)
    return path


def build(settings: Settings, out: Optional[Path] = None,
          health: Optional[List[Any]] = None, role_logs: Iterable[Path] = ()) -> Path:
    """Collect everything and write the bundle; returns its path."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = "cdsw-logs-%s-%s" % (socket.gethostname().split(".")[0] or "host", stamp)
    bundle = Bundle(redactor_for(settings), root)
    bundle.collect("config.txt", lambda: config_text(settings))
    bundle.collect("versions.txt", versions_text)
    results = health if health is not None else REGISTRY.run(settings)
    bundle.collect("health.json", lambda: json.dumps(report.document(results), indent=2,
                                                     default=str) + "\n")
    bundle.collect("health.txt", lambda: "\n".join(report.line(r) for r in results) + "\n")
    bundle.collect("database.json", lambda: database_text(settings))
    try:
        for name, text in docker_texts(settings).items():
            bundle.add(name, text)
    except Exception as e:
        bundle.errors.append("docker: not reachable at %s: %s" % (settings.docker_host, reason(e)))
    try:
        for name, text in engine_logs(settings).items():
            bundle.add(name, text)
    except Exception as e:
        bundle.errors.append("engines: no container logs from %s: %s"
                             % (settings.docker_host, reason(e)))
    try:
        for name, text in recent_logs(Path(settings.data_dir) / "logs"):
            bundle.add("logs/" + name, text)
    except OSError as e:
        bundle.errors.append("logs: %s" % e)
    for prefix, directory in role_log_dirs(role_logs):
        try:
            for name, text in recent_logs(directory):
                bundle.add("%s/%s" % (prefix, name), text)
        except OSError as e:
            bundle.errors.append("%s: %s" % (prefix, e))
    try:
        for name, text in run_logs(Path(settings.data_dir)):
            bundle.add("runs/" + name, text)
    except OSError as e:
        bundle.errors.append("runs: %s" % e)
    target = out or default_out_dir(settings) / (root + ".tar.gz")
    return bundle.write(target)
