"""A Contributor's attempts to run code as the project owner: files planted in the project that
an engine would load on its own when the owner starts a session, restarts its kernel or opens a
terminal. Each one, if it ran, would leave a marker file `hijacked-NAME` in the project. Shared
by the local-backend test (test_engine_isolation.py) and the swarm one (test_sessions_swarm.py).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Tuple

MARKER_PREFIX = "hijacked-"
PYTHON_VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def py(marker_dir: str, name: str) -> str:
    return ("open(%r, 'w').write('ran as ' + __import__('getpass').getuser())\n"
            % ("%s/%s%s" % (marker_dir, MARKER_PREFIX, name)))


def sh(marker_dir: str, name: str) -> str:
    return "touch %s/%s%s\n" % (marker_dir, MARKER_PREFIX, name)


def vectors(marker_dir: str) -> Dict[str, str]:
    """Project-relative path -> content. marker_dir: the project folder as the engine sees it."""
    files: Dict[str, str] = {
        # modules the engine, jupyter_server or the kernel launcher import while starting
        "ipykernel_launcher.py": py(marker_dir, "ipykernel_launcher"),
        "cdsw_agent/__init__.py": py(marker_dir, "cdsw_agent"),
        "cdsw_agent/engine/__init__.py": py(marker_dir, "cdsw_agent.engine"),
        "cdsw_agent/engine/__main__.py": py(marker_dir, "engine-main"),
        "cdsw_agent/engine/server.py": py(marker_dir, "engine-server"),
        "cdsw_agent/engine/kernel.py": py(marker_dir, "engine-kernel"),
        "jupyter_server/__init__.py": py(marker_dir, "jupyter_server"),
        "jupyter_server/__main__.py": py(marker_dir, "jupyter_server-main"),
        "ipykernel/__init__.py": py(marker_dir, "ipykernel"),
        "traitlets/__init__.py": py(marker_dir, "traitlets"),
        "IPython/__init__.py": py(marker_dir, "IPython"),
        "sitecustomize.py": py(marker_dir, "sitecustomize"),
        "usercustomize.py": py(marker_dir, "usercustomize"),
        # IPython and Jupyter configuration (Python files, executed when loaded)
        ".ipython/profile_default/startup/00-x.py": py(marker_dir, "ipython-startup"),
        ".ipython/profile_default/ipython_config.py": py(marker_dir, "ipython-config"),
        ".ipython/profile_default/ipython_kernel_config.py": py(marker_dir, "kernel-config"),
        "ipython_config.py": py(marker_dir, "cwd-ipython-config"),
        "ipython_kernel_config.py": py(marker_dir, "cwd-kernel-config"),
        "jupyter_server_config.py": py(marker_dir, "cwd-server-config"),
        "jupyter_config.py": py(marker_dir, "cwd-jupyter-config"),
        ".jupyter/jupyter_server_config.py": py(marker_dir, "server-config"),
        ".jupyter/jupyter_config.py": py(marker_dir, "jupyter-config"),
        # a server extension enabled by JSON config, its module in the project
        ".jupyter/jupyter_server_config.d/evil.json": json.dumps(
            {"ServerApp": {"jpserver_extensions": {"evil_extension": True}}}),
        ".local/etc/jupyter/jupyter_server_config.d/evil.json": json.dumps(
            {"ServerApp": {"jpserver_extensions": {"evil_extension": True}}}),
        "evil_extension.py": py(marker_dir, "server-extension"),
        # a kernelspec replacing python3 with any command
        ".local/share/jupyter/kernels/python3/kernel.json": json.dumps(
            {"argv": ["sh", "-c", sh(marker_dir, "kernelspec").strip()],
             "display_name": "Python 3", "language": "python"}),
        # shell start-up files of terminals
        ".bashrc": sh(marker_dir, "bashrc"),
        ".profile": sh(marker_dir, "profile"),
        ".bash_profile": sh(marker_dir, "bash_profile"),
        ".bash_login": sh(marker_dir, "bash_login"),
        # PYTHONSTARTUP target (the test points a project variable at it)
        ".pythonrc.py": py(marker_dir, "pythonstartup"),
        # what the owner's own code imports explicitly: the control that payloads do run
        "owner_helper.py": py(marker_dir, "explicit-import"),
    }
    for version in PYTHON_VERSIONS:  # the user site: .pth lines starting with import run
        files[".local/lib/python%s/site-packages/evil.pth" % version] = \
            "import os; " + py(marker_dir, "pth").strip() + "\n"
    return files


def plant(put: Callable[[str, Any], Any], mkdir: Callable[[str], Any],
          marker_dir: str) -> List[str]:
    """Writes every vector through the files API (put(path, content), mkdir(path)) as the
    Contributor; returns the planted paths."""
    made = set()
    planted = []
    for path, content in vectors(marker_dir).items():
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            if folder not in made:
                mkdir(folder)
                made.add(folder)
        put(path, content)
        planted.append(path)
    return planted


def markers(names: List[str]) -> List[str]:
    return sorted(n[len(MARKER_PREFIX):] for n in names if n.startswith(MARKER_PREFIX))


# where the engine token (or the file holding it) was or could be passed to an engine
TOKEN_NAMES = ("CDSW_ENGINE_TOKEN", "JUPYTER_TOKEN", "CDSW_ENGINE_TOKEN_FILE", "JUPYTER_TOKEN_FILE")


def token_checks(token: str) -> Tuple[str, str]:
    """Code for a kernel and a command for a terminal that print what of the token they see:
    variables holding it or named for it (the kernel prints them, the terminal counts them)."""
    kernel = ("import os\n"
              "print(sorted(k for k, v in os.environ.items() if %r in v or k in %r))\n"
              "print(%r in open('/proc/self/environ').read())" % (token, TOKEN_NAMES, token))
    terminal = "env | grep -c -e %s %s; echo done-$((40+2))\r" % (
        token, " ".join("-e ^%s=" % name for name in TOKEN_NAMES))
    return kernel, terminal
