"""`python -I -m cdsw_agent.engine.kernel -f CONNECTION_FILE`: the IPython kernel of an engine.

ipykernel's own launcher (`python -m ipykernel_launcher`) puts the working directory, the
project, first on sys.path, so a file named like any module the kernel imports while it starts
would run as the session's user. Here the interpreter starts isolated (-I: no working directory,
no PYTHON* variables, no user site) and IPython neither adds the working directory nor runs
$PYTHONSTARTUP. Once the kernel is up, and before the user's first cell, the user's own paths
are added: the user site of $HOME (`pip install --user`, the user's own) before the image's
packages, as Python does; then $PYTHONPATH and the working directory after them, so a project
module can be imported but cannot shadow an installed one.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import List, Optional

from traitlets.config import Config

from .paths import add_user_paths


# plotly figures go out as data (application/vnd.plotly.v1+json), drawn by the workbench's own
# plotly.js, never a CDN's; plotly's default in a kernel would also put its whole 4 MB library
# into the first output of every session. A project may set PLOTLY_RENDERER to choose another.
PLOTLY_RENDERER = "plotly_mimetype"


# set to "0" by the job runner (engine/job.py): a job never asks for completions
WARM_UP_VARIABLE = "CDSW_KERNEL_WARM_UP_COMPLETION"


# the interpreter's thread switch interval while the warm-up runs (Python's default: 5 ms)
WARM_UP_SWITCH_SECONDS = 0.0005


def warm_up_completion() -> None:
    """A session's first Tab makes jedi parse the builtins' stubs: 1.3 s on an idle node, past
    the console's 8 s completion budget on a loaded one, so the first Tab came back empty (3 s
    on an idle node, measured). Done once in the background at start instead, while the user
    reads the prompt.

    The warm-up is pure Python and holds the GIL: code the user runs meanwhile waited up to the
    switch interval at every hand-over between the kernel's threads, and a first `1+1` took
    0.2 s instead of 0.08 s. With a tenth of the interval, while the warm-up runs, it takes about
    0.13 s, and the first Tab still finds jedi ready within 2 s."""
    def work() -> None:
        before = sys.getswitchinterval()
        sys.setswitchinterval(WARM_UP_SWITCH_SECONDS)
        try:
            import jedi
            jedi.Interpreter("pri", [{}]).complete()
        except Exception:  # noqa: BLE001 - only a warm-up: the real completion reports its own
            pass
        finally:
            if sys.getswitchinterval() == WARM_UP_SWITCH_SECONDS:  # unless the user set one
                sys.setswitchinterval(before)
    threading.Thread(target=work, name="cdsw-completion-warm-up", daemon=True).start()


def main(argv: Optional[List[str]] = None) -> None:
    from ipykernel.kernelapp import IPKernelApp

    os.environ.setdefault("PLOTLY_RENDERER", PLOTLY_RENDERER)
    c = Config()
    c.IPKernelApp.ignore_cwd = True
    c.IPKernelApp.exec_PYTHONSTARTUP = False
    app = IPKernelApp.instance(config=c)
    app.initialize(sys.argv[1:] if argv is None else argv)
    add_user_paths()
    if os.environ.get(WARM_UP_VARIABLE) != "0":
        warm_up_completion()
    app.start()


if __name__ == "__main__":
    main()
