"""The engine's default command: start jupyter_server for a session, configured from CDSW_ENGINE_*
environment variables the orchestrator sets.

    CDSW_ENGINE_TOKEN     token a client must present (required; never put on the command line)
    CDSW_ENGINE_PORT      port to listen on (default 8888)
    CDSW_ENGINE_BASE_URL  URL prefix the router forwards under (default /)
    CDSW_ENGINE_ROOT_DIR  directory the server shows (default $HOME, the project)
    CDSW_ENGINE_ALLOW_ROOT  "1": allow running as root (the local backend's plain processes;
                          engine images run as their own user)
"""

from __future__ import annotations

import os
import sys
from typing import List, Mapping, Optional, Tuple

DEFAULT_PORT = 8888


class EntrypointError(Exception):
    """The environment does not describe a startable engine; str() says what to set."""


def jupyter_command(env: Mapping[str, str]) -> Tuple[List[str], dict]:
    """The jupyter_server command line and environment for the given variables."""
    token = env.get("CDSW_ENGINE_TOKEN", "")
    if not token:
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
    root_dir = env.get("CDSW_ENGINE_ROOT_DIR") or env.get("HOME") or "/home/cdsw"
    argv = [
        sys.executable, "-m", "jupyter_server",
        "--ip=0.0.0.0",
        "--port=%d" % port,
        "--port-retries=0",
        "--no-browser",
        "--ServerApp.base_url=" + base_url,
        "--ServerApp.root_dir=" + root_dir,
    ]
    if env.get("CDSW_ENGINE_ALLOW_ROOT") == "1":
        argv.append("--allow-root")
    child_env = dict(env)
    child_env["JUPYTER_TOKEN"] = token  # read by jupyter_server; kept out of `ps` output
    return argv, child_env


def main(env: Optional[Mapping[str, str]] = None) -> None:
    try:
        argv, child_env = jupyter_command(os.environ if env is None else env)
    except EntrypointError as e:
        sys.stderr.write("cdsw engine: %s\n" % e)
        sys.exit(2)
    os.execve(argv[0], argv, child_env)
