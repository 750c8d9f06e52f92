"""`python -I -m cdsw_agent.engine.plain SCRIPT [ARGS...]`: a Python script run with plain
Python (an experiment, or a job with CDSW_JOB_RUNNER=python), with a kernel's module paths.

`python3 script.py` puts the script's folder, the project, first on sys.path: a file a
collaborator put there named like a module the script imports (`json.py`, `pandas.py`) would run
instead of it, as whoever started the run. Here the interpreter starts isolated (-I) and the
user's paths are added as a kernel adds them (engine/paths.py): the user site, then $PYTHONPATH,
then the script's folder, after the image's packages. The script then runs as `__main__`, with
`sys.argv` and `__file__` as `python3 SCRIPT ARGS` sets them, and the job's copy of it when the
master gave one (engine/job.py SCRIPT_COPY_VARIABLE). -I also ignores PYTHON* variables; the one
a run's log depends on, PYTHONUNBUFFERED, is honoured here.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from .job import script_source
from .paths import add_user_paths


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.exit("usage: python -I -m cdsw_agent.engine.plain SCRIPT [ARGS...]")
    script = argv[0]
    if os.environ.get("PYTHONUNBUFFERED"):
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(write_through=True)  # type: ignore[union-attr]
    folder = os.path.dirname(os.path.abspath(script))
    add_user_paths(folder)
    source = script_source(script)
    try:
        with open(source, "rb") as f:
            code = compile(f.read(), script, "exec")
    except OSError as e:
        sys.exit("python: can't open file %r: %s" % (script, e.strerror or e))
    sys.argv = [script] + list(argv[1:])
    main_globals = {"__name__": "__main__", "__file__": script, "__builtins__": __builtins__,
                    "__package__": None, "__spec__": None, "__loader__": None,
                    "__cached__": None}
    module = type(sys)("__main__")
    module.__dict__.update(main_globals)
    sys.modules["__main__"] = module
    exec(code, module.__dict__)


if __name__ == "__main__":
    main()
