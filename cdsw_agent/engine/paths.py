"""Where an engine's Python finds the user's and the project's modules: the user site of $HOME
(`pip install --user`, the user's own) before the image's packages, as Python does; then
$PYTHONPATH and the project's folder after them, so a project module can be imported but cannot
shadow an installed one. Kernels (engine/kernel.py) and scripts run with plain Python
(engine/plain.py) start isolated (`python -I`) and add these. Standard library only.
"""

from __future__ import annotations

import os
import site
import sys
from typing import List


def user_paths(cwd: str, pythonpath: str, user_site: str) -> List[str]:
    """The entries the kernel appends to sys.path, in order."""
    out: List[str] = []
    for entry in [user_site] + [p for p in pythonpath.split(os.pathsep) if p] + [cwd]:
        entry = os.path.abspath(entry)
        if entry not in out:
            out.append(entry)
    return out


def add_user_paths(folder: str = "") -> None:
    """Appends the user's paths, with `folder` (default: the working directory) last."""
    user_site = site.getusersitepackages()
    for entry in user_paths(folder or os.getcwd(), os.environ.get("PYTHONPATH", ""),
                            user_site):
        if entry in sys.path:
            continue
        if entry == user_site:
            if os.path.isdir(user_site):
                add_user_site(user_site)
        else:
            sys.path.append(entry)


def add_user_site(user_site: str) -> None:
    """The user site of $HOME (the user's own folder, never the project), with its .pth files,
    before the image's site-packages as Python does it: `pip install --user --upgrade pandas`
    takes effect for modules the kernel imports from then on."""
    before = list(sys.path)
    site.addsitedir(user_site)
    added = [p for p in sys.path if p not in before]
    rest = [p for p in sys.path if p in before]
    at = next((i for i, p in enumerate(rest) if os.path.basename(p) in ("site-packages",
                                                                       "dist-packages")),
              len(rest))
    sys.path[:] = rest[:at] + added + rest[at:]
