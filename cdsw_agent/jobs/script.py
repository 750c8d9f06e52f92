"""The bytes a job run runs: read once by the master, checked against the version the job's
person saved (jobs/identity.py), and given to the engine as a read-only copy.

Project files are shared by every collaborator, so between the master's check and the engine's
read another person could change the script. The engine therefore never reads the project's
file: the copy is bind-mounted read-only over the script's path (so `__file__`, `$0` and the
script's folder stay what they were) and at COPY_MOUNT, which the kernel and Scala runners read
(engine/job.py, engine/scala_job.py). The copy lives in the run's engine folder on the shared
storage, outside every project, and goes with it when the run ends.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from ..engine.job import SCRIPT_COPY_VARIABLE
from ..orchestrators import Mount, WorkloadSpec
from ..projects import safe_fs
from ..workloads.engine import PROJECT_MOUNT
from ..workloads.oneshot import LaunchError

COPY_MOUNT = "/run/cdsw/job"  # under /run, not /var/run: a link in the engine image
MAX_BYTES = 16 << 20  # a script, not a data file


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def script_file(project_dir: Path, script: str) -> Path:
    """The script on disk; LaunchError when it is missing or points outside the project."""
    path = project_dir / script
    try:
        real, root = path.resolve(), project_dir.resolve()
    except (OSError, RuntimeError):
        raise LaunchError("script %s not found" % script)
    if root not in real.parents or not real.is_file():
        raise LaunchError("script %s not found" % script)
    return real


class ThroughLink(LaunchError):
    """The script's path goes through a symbolic link."""


def read(project_dir: Path, script: str) -> bytes:
    """The script's bytes, read once through descriptors that follow no symbolic link (the
    master reads as root: a collaborator's link must not lead it to a file outside the project,
    now or by swapping a folder for a link while it reads); LaunchError when it is missing, not
    a file or larger than a script."""
    try:
        root = os.open(str(project_dir), safe_fs.DIR_FLAGS)
    except OSError:
        raise LaunchError("script %s not found" % script)
    try:
        fd = safe_fs.open_beneath(root, PurePosixPath(script).parts)
    except safe_fs.Unsafe as e:
        if e.kind == "symlink":
            raise ThroughLink("script %s goes through a symbolic link; give the path of the "
                              "file itself" % script)
        raise LaunchError("script %s not found" % script)
    except OSError:
        raise LaunchError("script %s not found" % script)
    finally:
        os.close(root)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LaunchError("script %s not found" % script)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise LaunchError("cannot read script %s: %s" % (script, e.strerror or e))
    if len(data) > MAX_BYTES:
        raise LaunchError("script %s is over %d MiB; a job runs a script, not a data file"
                          % (script, MAX_BYTES >> 20))
    return data


def current_digest(project_dir: Path, script: str) -> str:
    """The digest of the script as it is now ("" when it cannot be read)."""
    try:
        return digest(read(project_dir, script))
    except LaunchError:
        return ""


def attach(spec: WorkloadSpec, engine_dir: Path, script: str, data: bytes, local: bool) -> None:
    """Writes the copy (read-only, owned by this process) and gives it to the engine."""
    folder = engine_dir / "script"
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    copy = folder / PurePosixPath(script).name
    tmp = copy.with_name(copy.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o444)
    os.replace(tmp, copy)
    if local:  # processes on this host: no mount namespace to shadow the project's file in
        spec.env[SCRIPT_COPY_VARIABLE] = str(copy)
        return
    # read() followed no link: the script's own path is where the engine finds it
    spec.mounts.append(Mount(str(copy), "%s/%s" % (PROJECT_MOUNT, script), True))
    spec.mounts.append(Mount(str(copy), "%s/%s" % (COPY_MOUNT, copy.name), True))
    spec.env[SCRIPT_COPY_VARIABLE] = "%s/%s" % (COPY_MOUNT, copy.name)


def remove(engine_dir: Path) -> None:
    shutil.rmtree(engine_dir / "script", ignore_errors=True)
