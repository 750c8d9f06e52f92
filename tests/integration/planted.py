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
TOKEN_NAMES = ("CDSW_ENGINE_TOKEN", "JUPYTER_TOKEN", "CDSW_ENGINE_TOKEN_FILE", "JUPYTER_TOKEN_FILE",
               "CDSW_ENGINE_TOKEN_SHA256")


def token_checks(token: str) -> Tuple[str, str]:
    """Code for a kernel and a command for a terminal that print what of the token they see:
    variables holding it or named for it (the kernel prints them, the terminal counts them).
    Both carry the token reversed, so that IPython's history and the shell's keep no copy for
    token_hunt to find."""
    kernel = ("import os\n"
              "T = %r[::-1]\n"
              "print(sorted(k for k, v in os.environ.items() if T in v or k in %r))\n"
              "print(T in open('/proc/self/environ').read())" % (token[::-1], TOKEN_NAMES))
    terminal = "env | grep -c -e \"$(python -c \"print('%s'[::-1])\")\" %s; echo done-$((40+2))\r" % (
        token[::-1], " ".join("-e ^%s=" % name for name in TOKEN_NAMES))
    return kernel, terminal


# Looking for the token everywhere code in an engine can look. The token is sent reversed, so
# neither the code (kept in IPython's history in $HOME) nor the shell's command line hold it.
HUNT = r'''
import json, os
T = %(reversed)r[::-1].encode()
CAP = 4 << 20
found, readable_memory, files = [], [], 0
pids = [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]
for pid in pids:
    for name in ('environ', 'cmdline'):
        try:
            with open('/proc/%%s/%%s' %% (pid, name), 'rb') as f:
                if T in f.read(CAP):
                    found.append('/proc/%%s/%%s' %% (pid, name))
        except OSError:
            pass
if %(memory)r:  # the memory of every other process this user may read
    for pid in pids:
        try:
            with open('/proc/%%s/maps' %% pid) as m:
                regions = [l.split()[0] for l in m if l.split()[1].startswith('r')]
            mem = open('/proc/%%s/mem' %% pid, 'rb', 0)
        except OSError:
            continue
        readable = False
        with mem:
            for r in regions:
                start, end = (int(x, 16) for x in r.split('-'))
                try:
                    mem.seek(start)
                    data = mem.read(min(end - start, 256 << 20))
                except (OSError, OverflowError, ValueError):
                    continue
                readable = True
                if T in data:
                    found.append('/proc/%%s/mem' %% pid)
        if readable:
            readable_memory.append(int(pid))
for top in %(paths)r:
    for root, dirs, names in os.walk(top):
        for n in names:
            p = os.path.join(root, n)
            try:
                if os.path.islink(p):
                    continue
                with open(p, 'rb') as f:
                    data = f.read(CAP)
            except OSError:
                continue
            files += 1
            if T in data:
                found.append(p)
print(json.dumps({'found': found, 'memory': readable_memory, 'files': files,
                  'server': os.getppid()}))
'''


def token_hunt(token: str, paths: List[str], memory: bool) -> Tuple[str, str]:
    """Code for a kernel and a command for a terminal that look for the token in every
    process's environment and command line, every file they can read under `paths`, and
    (kernel, with memory) the memory of every process they may read. The kernel prints JSON
    ({found, memory: pids whose memory it read, files: how many it read, server: its parent});
    the terminal prints two counts (environments and command lines, files), then done-42.
    Both skip /proc/PID/mem (read region by region above) and pagemap (a sparse file of
    hundreds of GB)."""
    kernel = HUNT % {"reversed": token[::-1], "memory": memory, "paths": list(paths)}
    pattern = "<(python -c \"print('%s'[::-1])\")" % token[::-1]
    terminal = ("cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | grep -c -a -F -f %s; "
                "grep -rlsaF --exclude=pagemap --exclude=mem -f %s %s 2>/dev/null | wc -l; "
                "echo done-$((40+2))\r"
                % (pattern, pattern, " ".join(paths)))
    return kernel, terminal
