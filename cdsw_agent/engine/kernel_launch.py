"""How an engine starts a Python kernel, kept light enough for the entrypoint, which starts the
session's kernel before it runs jupyter_server (see early_kernel.py for why and how the server
takes it over).

Standard library only: the entrypoint imports this before anything else runs in the engine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

KERNEL_MODULE = "cdsw_agent.engine.kernel"
PYTHON_KERNELSPEC = "python3"  # ipykernel's kernelspec, the one engine images ship
# "PID CONNECTION-FILE" of the kernel the entrypoint started, for engine.server (which removes it
# from os.environ at once, so kernels and terminals never see it)
EARLY_KERNEL_VARIABLE = "CDSW_EARLY_KERNEL"
_CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def python_kernel_argv(connection_file: str) -> List[str]:
    """The image's interpreter in isolated mode through cdsw_agent.engine.kernel."""
    return [sys.executable, "-I", "-m", KERNEL_MODULE, "-f", connection_file]


def kernel_env(spec_env: Mapping[str, str], home: Optional[str] = None) -> Dict[str, str]:
    """A kernelspec's environment with what the engine adds to every kernel's (over the
    server's own environment): R reads its start-up files from $HOME, never from the working
    directory (the project)."""
    home = os.environ.get("HOME", "") if home is None else home
    out = dict(spec_env)
    if home:
        out.setdefault("R_PROFILE_USER", os.path.join(home, ".Rprofile"))
        out.setdefault("R_ENVIRON_USER", os.path.join(home, ".Renviron"))
    return out


def runtime_dir(env: Mapping[str, str]) -> str:
    """Jupyter's runtime directory for this environment (jupyter_core.paths' rule, without
    importing it): where jupyter_server writes its kernels' connection files too."""
    if env.get("JUPYTER_RUNTIME_DIR"):
        return env["JUPYTER_RUNTIME_DIR"]
    data = env.get("JUPYTER_DATA_DIR") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".local", "share", "jupyter")
    return os.path.join(data, "runtime")


def _free_ports(count: int) -> List[int]:
    """Ports free on the loopback now (all held until all are known, so they differ); the
    kernel binds them a moment later, as with jupyter_client's own choice."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def write_connection_file(directory: str, kernel_name: str) -> str:
    """A kernel connection file (Jupyter's format: TCP on the loopback, HMAC-SHA256 with a new
    key), readable by this user only."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info: Dict[str, object] = dict(zip(_CHANNELS, _free_ports(len(_CHANNELS))))
    info.update({"ip": "127.0.0.1", "transport": "tcp", "signature_scheme": "hmac-sha256",
                 "key": uuid.uuid4().hex, "kernel_name": kernel_name})
    path = os.path.join(directory, "kernel-early-%s.json" % uuid.uuid4().hex[:12])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    return path


@dataclass
class StartedKernel:
    pid: int
    connection_file: str

    def variable(self) -> str:
        return "%d %s" % (self.pid, self.connection_file)


def parse_variable(text: str) -> Optional[StartedKernel]:
    pid, _, path = text.partition(" ")
    if not pid.isdigit() or not path:
        return None
    return StartedKernel(int(pid), path)


def start_python_kernel(env: Mapping[str, str]) -> StartedKernel:
    """Starts the engine's Python kernel as jupyter_client would, as a child of this process
    (which then becomes jupyter_server by exec): in a session of its own, so an interrupt
    signals its process group only; with the environment jupyter_server gives kernels (env is
    already without the token digest and the start-up variables); JPY_PARENT_PID, so the kernel
    ends with its server. OSError when it cannot be started."""
    path = write_connection_file(runtime_dir(env), PYTHON_KERNELSPEC)
    child_env = dict(env)
    child_env.update(kernel_env({}, env.get("HOME", "")))  # ipykernel's kernelspec has no env
    child_env["JPY_PARENT_PID"] = str(os.getpid())
    try:
        proc = subprocess.Popen(python_kernel_argv(path), env=child_env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        os.unlink(path)
        raise
    return StartedKernel(proc.pid, path)
