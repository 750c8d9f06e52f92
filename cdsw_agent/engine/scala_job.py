"""`python -I -m cdsw_agent.engine.scala_job SCRIPT [ARGS...]`: a job's (or an experiment's)
Scala script, run in the same Scala REPL as the engine's Scala kernel (engine/scala_repl.py), on
the cluster's Spark and Java, with `spark` and `sc` ready as in spark-shell.

The script is compiled and run as one unit, as spark-shell's `:paste` would: a compile error
anywhere means nothing of it runs, and a definition may be used before the line that makes it.
`args` holds the job's arguments (`Array[String]`). What the script prints goes to the run's log
as it comes; the REPL's echo of definitions (`val x: Int = 3`) is left out.

Exit status: 0 when the script ran to its end, the code given to `sys.exit(N)` (the JVM exits),
1 on a compile error or an uncaught exception (the REPL's message on stderr), 2 when the Scala
REPL cannot run here (no Spark with Scala, no Java: one line saying what to set), 143 when
stopped (SIGTERM: running Spark jobs are cancelled and the application stopped first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, List, Optional

from .job import script_source
from .scala_repl import Interpreter, ScalaUnavailable, error_parts


class Stopped(Exception):
    pass


def _stop(signum: int, frame: Any) -> None:
    raise Stopped()


def args_code(args: List[str]) -> str:
    """The Scala definition of `args` (a JSON string is a valid Scala string literal)."""
    return "val args: Array[String] = Array[String](%s)" % ", ".join(json.dumps(a) for a in args)


def app_name(script: str) -> str:
    name, run = os.environ.get("CDSW_JOB_NAME", ""), os.environ.get("CDSW_RUN_ID", "")
    return "Job %s run %s" % (name, run) if name and run else "Scala script %s" % script


def run(interp: Interpreter, code: str) -> int:
    """Runs the script's code in a started interpreter; the exit status."""
    try:
        status, echo = interp.interpret(code)
    except Stopped:
        raise
    except Exception as e:  # noqa: BLE001 - the gateway broke: the JVM exited or died
        code = _jvm_exit_code(interp)
        if code is not None:  # sys.exit(N) in the script
            return code
        print("cdsw job: the Scala REPL died: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    if status == "Success":
        return 0
    _, _, traceback = error_parts(status, echo, code)
    sys.stdout.flush()
    print("\n".join(traceback), file=sys.stderr)
    return 1


def _jvm_exit_code(interp: Interpreter) -> Optional[int]:
    """The JVM's exit status once it has exited by itself; None if it runs on or was killed."""
    if interp.proc is None:
        return None
    try:
        code = interp.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        return None
    return code if code >= 0 else None


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m cdsw_agent.engine.scala_job SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    script, args = argv[0], argv[1:]
    try:
        with open(script_source(script), encoding="utf-8") as f:
            code = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print("cdsw job: cannot read %s: %s" % (script, e), file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    interp: Optional[Interpreter] = None
    try:
        interp = Interpreter(os.environ)
        print("cdsw job: starting Scala %s on the Spark in %s (the JVM and the compiler take "
              "a while)" % (interp.version, interp.home), file=sys.stderr, flush=True)
        try:
            interp.start(app_name(script), capture_stdout=False)
        except (ScalaUnavailable, Stopped):
            raise
        except Exception as e:  # noqa: BLE001 - one line, not a py4j traceback
            print("cdsw job: the Scala REPL could not start: %s: %s"
                  % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""), file=sys.stderr)
            return 2
        status, echo = interp.interpret(args_code(args))
        if status != "Success":
            print("cdsw job: cannot set args: %s" % echo.strip(), file=sys.stderr)
            return 2
        return run(interp, code)
    except ScalaUnavailable as e:
        print("cdsw job: %s" % e, file=sys.stderr)
        return 2
    except Stopped:
        print("cdsw job: stopped", file=sys.stderr)
        return 143
    finally:
        sys.stdout.flush()
        if interp is not None and interp.proc is not None and interp.proc.poll() is None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the shutdown itself is not stopped
            interp.shutdown()


if __name__ == "__main__":
    sys.exit(main())
