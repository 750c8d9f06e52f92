"""The engine's default command, `python -I -m cdsw_agent.engine`: start jupyter_server for a
session, configured from CDSW_ENGINE_* environment variables the orchestrator sets.

    CDSW_ENGINE_TOKEN     token the master presents (required; never put on the command line)
    CDSW_ENGINE_PORT      port to listen on (default 8888)
    CDSW_ENGINE_BASE_URL  URL prefix the router forwards under (default /)
    CDSW_ENGINE_ROOT_DIR  directory the server shows (default: the working directory, the project)
    CDSW_ENGINE_ALLOW_ROOT  "1": allow running as root (the local backend's plain processes;
                          engine images run as their own user)

Nothing from the project runs here: this module, jupyter_server (cdsw_agent.engine.server) and
the kernels (cdsw_agent.engine.kernel) run with `python -I`, so neither the working directory
nor PYTHON* variables nor the user site reach their sys.path, and Jupyter's and IPython's
configuration comes from $HOME, which the master points outside the project.

The token goes to jupyter_server in a file readable only by this user, which the server reads
and removes at start; the server's environment, which kernels and terminals inherit, never holds
it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Dict, List, Mapping, Optional, Tuple

DEFAULT_PORT = 8888
TOKEN_VARIABLES = ("CDSW_ENGINE_TOKEN", "JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE")
TOKEN_FILE_VARIABLE = "CDSW_ENGINE_TOKEN_FILE"  # read and removed by engine.server


class EntrypointError(Exception):
    """The environment does not describe a startable engine; str() says what to set."""


def jupyter_command(env: Mapping[str, str], token_file: str = "") -> Tuple[List[str], Dict[str, str]]:
    """The jupyter_server command line and its environment (without the token) for the given
    variables; token_file is where the token was written."""
    if not env.get("CDSW_ENGINE_TOKEN", ""):
        raise EntrypointError("CDSW_ENGINE_TOKEN is not set; the engine refuses to start without a token")
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
    child_env = {k: v for k, v in env.items() if k not in TOKEN_VARIABLES}
    child_env[TOKEN_FILE_VARIABLE] = token_file
    return argv, child_env


def write_token(token: str) -> str:
    """The token in a new file only this user can read, in a new private directory."""
    directory = tempfile.mkdtemp(prefix="cdsw-engine-")  # mode 0700
    path = os.path.join(directory, "token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return path


def main(env: Optional[Mapping[str, str]] = None) -> None:
    source = os.environ if env is None else env
    try:
        argv, child_env = jupyter_command(source)
    except EntrypointError as e:
        sys.stderr.write("cdsw engine: %s\n" % e)
        sys.exit(2)
    child_env[TOKEN_FILE_VARIABLE] = write_token(source["CDSW_ENGINE_TOKEN"])
    os.execve(argv[0], argv, child_env)
