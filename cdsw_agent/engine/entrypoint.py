"""The engine's default command, `python -I -m cdsw_agent.engine`: start jupyter_server for a
session, configured from CDSW_ENGINE_* environment variables the orchestrator sets.

    CDSW_ENGINE_TOKEN_SHA256  SHA-256 (hex) of the token the master presents (required). The
                          engine never holds the token itself, so nothing in it can leak it:
                          the container's init process, /proc/1/environ and every other
                          process a kernel can read carry only this digest, which opens nothing.
    CDSW_ENGINE_PORT      port to listen on (default 8888)
    CDSW_ENGINE_BASE_URL  URL prefix the router forwards under (default /)
    CDSW_ENGINE_ROOT_DIR  directory the server shows (default: the working directory, the project)
    CDSW_ENGINE_ALLOW_ROOT  "1": allow running as root (the local backend's plain processes;
                          engine images run as their own user)

Nothing from the project runs here: this module, jupyter_server (cdsw_agent.engine.server) and
the kernels (cdsw_agent.engine.kernel) run with `python -I`, so neither the working directory
nor PYTHON* variables nor the user site reach their sys.path, and Jupyter's and IPython's
configuration comes from $HOME, which the master points outside the project.

With CDSW_WARM_CLAIM_SHA256 set, the engine is a warm one: it waits for a session to claim it
and takes the session's variables then (warm.py).

A session's Python kernel (CDSW_PRESTART_KERNEL=python3) is started here, before this process
becomes jupyter_server, which takes it over (early_kernel.py): the two start-ups overlap.

The digest goes to jupyter_server in its environment, which the server removes from os.environ
at start, so kernels and terminals do not inherit even the digest; the server then makes itself
non-dumpable, so code running as the same user cannot read its memory (where the master's
requests, token included, arrive) through /proc or ptrace.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from typing import Dict, List, Mapping, Optional, Tuple

from .kernel_launch import EARLY_KERNEL_VARIABLE, PYTHON_KERNELSPEC, start_python_kernel

DEFAULT_PORT = 8888
DIGEST_VARIABLE = "CDSW_ENGINE_TOKEN_SHA256"  # read and removed from os.environ by engine.server
# the session's kernelspec, which engine.server starts before it listens (read and removed too)
PRESTART_VARIABLE = "CDSW_PRESTART_KERNEL"
# variables that would hand jupyter_server (and so every kernel) a token: never passed on
TOKEN_VARIABLES = ("CDSW_ENGINE_TOKEN", "JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE",
                   "CDSW_ENGINE_TOKEN_FILE")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def token_digest(token: str) -> str:
    """What an engine is given instead of its token: the master keeps the token, the engine
    checks what it is sent against this."""
    return hashlib.sha256(token.encode()).hexdigest()


class EntrypointError(Exception):
    """The environment does not describe a startable engine; str() says what to set."""


def jupyter_command(env: Mapping[str, str]) -> Tuple[List[str], Dict[str, str]]:
    """The jupyter_server command line and its environment for the given variables."""
    digest = env.get(DIGEST_VARIABLE, "")
    if not digest:
        raise EntrypointError("%s is not set (the SHA-256 in hex of the token the master will "
                              "send; an engine never takes the token itself); the engine "
                              "refuses to start without it" % DIGEST_VARIABLE)
    if not _DIGEST.fullmatch(digest):
        raise EntrypointError("%s is not a SHA-256 in hex (64 characters 0-9a-f)"
                              % DIGEST_VARIABLE)
    port_text = env.get("CDSW_ENGINE_PORT", str(DEFAULT_PORT))
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise EntrypointError("CDSW_ENGINE_PORT=%r is not a port number from 1 to 65535" % port_text)
    base_url = env.get("CDSW_ENGINE_BASE_URL", "/") or "/"
    if not base_url.startswith("/"):
        raise EntrypointError("CDSW_ENGINE_BASE_URL=%r must start with /" % base_url)
    if not base_url.endswith("/"):
        base_url += "/"
    root_dir = env.get("CDSW_ENGINE_ROOT_DIR") or os.getcwd()
    argv = [
        sys.executable, "-I", "-m", "cdsw_agent.engine.server",
        "--ip=0.0.0.0",
        "--port=%d" % port,
        "--port-retries=0",
        "--no-browser",
        "--ServerApp.base_url=" + base_url,
        "--ServerApp.root_dir=" + root_dir,
    ]
    if env.get("CDSW_ENGINE_ALLOW_ROOT") == "1":
        argv.append("--allow-root")
    # which kernel the server is to take over is the entrypoint's to say, never the project's
    child_env = {k: v for k, v in env.items()
                 if k not in TOKEN_VARIABLES and k != EARLY_KERNEL_VARIABLE}
    return argv, child_env


def start_early_kernel(server_env: Dict[str, str]) -> None:
    """A session's Python kernel starts now, before jupyter_server (which takes it over, see
    early_kernel.py), with the environment the server would give it; server_env then tells the
    server which kernel that is. Other kernelspecs start in the server, as before."""
    if server_env.get(PRESTART_VARIABLE) != PYTHON_KERNELSPEC:
        return
    kernel_env = {k: v for k, v in server_env.items()
                  if k not in (DIGEST_VARIABLE, PRESTART_VARIABLE, EARLY_KERNEL_VARIABLE)}
    try:
        started = start_python_kernel(kernel_env)
    except OSError as e:  # the server starts it, a moment later
        sys.stderr.write("cdsw engine: the kernel did not start ahead of the server: %s\n" % e)
        return
    server_env[EARLY_KERNEL_VARIABLE] = started.variable()


def main(env: Optional[Mapping[str, str]] = None) -> None:
    source = os.environ if env is None else env
    from .warm import is_warm

    if is_warm(source):  # a warm engine: waits for its session (warm.py)
        from . import warm

        warm.main()
        return
    argv, child_env = server_command(source)
    os.execve(argv[0], argv, child_env)


def server_command(env: Mapping[str, str]) -> Tuple[List[str], Dict[str, str]]:
    """jupyter_server's command line and environment, the session's Python kernel already
    started; exits (2) with one line when the variables do not describe an engine."""
    try:
        argv, child_env = jupyter_command(env)
    except EntrypointError as e:
        sys.stderr.write("cdsw engine: %s\n" % e)
        sys.exit(2)
    start_early_kernel(child_env)
    return argv, child_env
