"""`python -I -m cdsw_agent.engine.kernel -f CONNECTION_FILE`: the IPython kernel of an engine.

ipykernel's own launcher (`python -m ipykernel_launcher`) puts the working directory, the
project, first on sys.path, so a file named like any module the kernel imports while it starts
would run as the session's user. Here the interpreter starts isolated (-I: no working directory,
no PYTHON* variables, no user site) and IPython neither adds the working directory nor runs
$PYTHONSTARTUP. Once the kernel is up, and before the user's first cell, the user's own paths
are added after the image's packages, so a project module can be imported but cannot shadow an
installed one: the user site of $HOME (`pip install --user`), then $PYTHONPATH, then the working
directory.
"""

from __future__ import annotations

import os
import site
import sys
from typing import List, Optional

from traitlets.config import Config


def user_paths(cwd: str, pythonpath: str, user_site: str) -> List[str]:
    """The entries the kernel appends to sys.path, in order."""
    out: List[str] = []
    for entry in [user_site] + [p for p in pythonpath.split(os.pathsep) if p] + [cwd]:
        entry = os.path.abspath(entry)
        if entry not in out:
            out.append(entry)
    return out


def add_user_paths() -> None:
    user_site = site.getusersitepackages()
    for entry in user_paths(os.getcwd(), os.environ.get("PYTHONPATH", ""), user_site):
        if entry in sys.path:
            continue
        if entry == user_site and os.path.isdir(user_site):
            site.addsitedir(user_site)  # its .pth files too: the user's own, in $HOME
        else:
            sys.path.append(entry)


def main(argv: Optional[List[str]] = None) -> None:
    from ipykernel.kernelapp import IPKernelApp

    c = Config()
    c.IPKernelApp.ignore_cwd = True
    c.IPKernelApp.exec_PYTHONSTARTUP = False
    app = IPKernelApp.instance(config=c)
    app.initialize(sys.argv[1:] if argv is None else argv)
    add_user_paths()
    app.start()


if __name__ == "__main__":
    main()
