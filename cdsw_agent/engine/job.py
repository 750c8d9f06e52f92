"""`python -I -m cdsw_agent.engine.job SCRIPT [ARGS...]`: a job's Python script run in the
engine's own kernel, as CDSW ran jobs, so that `display()`, `%magic`, `!cmd` and rich outputs
work as they do in a session.

The kernel is the one sessions get (cdsw_agent.engine.kernel: isolated start-up, the user's
paths added after the image's). The script runs as one cell, after `sys.argv` and `__file__`
are set as `python SCRIPT ARGS` would set them. Its text (streams, the text form of every
displayed object, tracebacks without colours) goes to this process's stdout and stderr: the
run's plain-text log. Its rich outputs (tables as HTML, PNG/SVG images, plotly figures) are
appended, one JSON object a line, to the file named by CDSW_OUTPUTS_FILE, which the master
keeps with the run (workloads/outputs.py).

A cron run the scheduler started ahead of its fire time (server/scheduler.py) has the instant in
START_AT_VARIABLE: the kernel starts at once and the script is read and run at that instant, so
a scheduled script starts on time however long the engine took to come up.

Exit status: 0 when the script ran to its end, the code given to `sys.exit(N)`, 1 on an
uncaught exception, 2 when the kernel could not start or died, 143 when stopped (SIGTERM: the
kernel, which jupyter_client starts in a session of its own, is shut down first).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import time
from typing import IO, Any, Dict, List, Optional

OUTPUTS_VARIABLE = "CDSW_OUTPUTS_FILE"
# what a run page renders; text/plain always goes to the log as well
RICH_TYPES = ("text/plain", "text/html", "image/png", "image/jpeg", "image/svg+xml",
              "application/vnd.plotly.v1+json")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
START_TIMEOUT = 120.0  # a busy two-core node
# when the script is to start, in seconds since the epoch (jobs/launch.py sets it)
START_AT_VARIABLE = "CDSW_JOB_START_AT"
MAX_START_WAIT = 60.0  # an instant further away is not the scheduler's: start at once
# the read-only copy of the script the master checked (jobs/script.py): what runs, whatever the
# project's file holds by then; `__file__` and sys.argv still name the script's own path
SCRIPT_COPY_VARIABLE = "CDSW_JOB_SCRIPT_COPY"


class Stopped(Exception):
    """SIGTERM (the run was stopped or timed out): the kernel is shut down before exiting."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped()


def plain(text: str) -> str:
    return ANSI.sub("", text)


def prelude(script: str, args: List[str]) -> str:
    """The silent cell that sets the script's arguments and name before it runs."""
    return ("import sys as _cdsw_sys, warnings as _cdsw_warnings\n"
            "_cdsw_sys.argv = %s\n__file__ = %s\n"
            # sys.exit(N) ends a job with status N; IPython's advice for consoles is noise here
            "_cdsw_warnings.filterwarnings('ignore', message='To exit: use')\n"
            "del _cdsw_sys, _cdsw_warnings\n" % (json.dumps([script] + args), json.dumps(script)))


def exit_code(reply: Dict[str, Any]) -> int:
    """The process's exit status for the script cell's execute_reply content."""
    if reply.get("status") == "ok":
        return 0
    if reply.get("ename") == "SystemExit":
        value = str(reply.get("evalue", "")).strip()
        if value in ("", "None", "0"):
            return 0
        try:
            return int(value) & 0xFF
        except ValueError:
            return 1  # sys.exit("message"): Python prints it and exits 1
    return 1


class Outputs:
    """Writes a kernel's iopub messages: text to the log, rich data to the outputs file."""

    def __init__(self, stdout: IO[str], stderr: IO[str], rich: Optional[IO[str]]):
        self.stdout, self.stderr, self.rich = stdout, stderr, rich

    def __call__(self, msg: Dict[str, Any]) -> None:
        kind, content = msg["header"]["msg_type"], msg.get("content") or {}
        if kind == "stream":
            out = self.stderr if content.get("name") == "stderr" else self.stdout
            out.write(content.get("text", ""))
            out.flush()
        elif kind in ("display_data", "execute_result"):
            data = {k: v for k, v in (content.get("data") or {}).items() if k in RICH_TYPES}
            text = data.get("text/plain")
            if text:
                self.stdout.write(plain(str(text)).rstrip("\n") + "\n")
                self.stdout.flush()
            if self.rich is not None and set(data) - {"text/plain"}:
                self.rich.write(json.dumps({"type": "display_data", "data": data}) + "\n")
                self.rich.flush()
        elif kind == "error":
            if content.get("ename") == "SystemExit":
                return  # an exit status, not an error (exit_code reads it)
            lines = content.get("traceback") or ["%s: %s" % (content.get("ename"),
                                                             content.get("evalue"))]
            self.stderr.write(plain("\n".join(lines)).rstrip("\n") + "\n")
            self.stderr.flush()


def execute(km: Any, client: Any, code: str, hook: Outputs, silent: bool = False) -> Dict[str, Any]:
    """Runs one cell, passing its outputs to hook; its execute_reply content. RuntimeError when
    the kernel dies meanwhile (the script called os._exit, or ran out of memory)."""
    msg_id = client.execute(code, silent=silent, store_history=not silent, allow_stdin=False)
    idle = False
    while not idle:
        try:
            msg = client.get_iopub_msg(timeout=1.0)
        except queue.Empty:
            if not km.is_alive():
                raise RuntimeError("it exited while the script ran")
            continue
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["header"]["msg_type"] == "status":
            idle = msg["content"].get("execution_state") == "idle"
        else:
            hook(msg)
    while True:
        try:
            reply = client.get_shell_msg(timeout=1.0)
        except queue.Empty:
            if not km.is_alive():
                raise RuntimeError("it exited while the script ran")
            continue
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return dict(reply.get("content") or {})


def wait_for_start(env: Optional[Dict[str, str]] = None) -> None:
    """Sleeps until START_AT_VARIABLE's instant, if it is ahead (at most MAX_START_WAIT)."""
    text = (os.environ if env is None else env).get(START_AT_VARIABLE, "")
    try:
        delay = float(text) - time.time() if text else 0.0
    except ValueError:
        return
    if 0 < delay <= MAX_START_WAIT:
        time.sleep(delay)


def script_source(script: str) -> str:
    """The file to read the script's text from: the master's copy when there is one."""
    return os.environ.get(SCRIPT_COPY_VARIABLE) or script


def read_script(script: str, stderr: IO[str]) -> Optional[str]:
    try:
        with open(script_source(script), encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        stderr.write("cdsw job: cannot read %s: %s\n" % (script, e))
        return None


def run(script: str, args: List[str], outputs: Optional[IO[str]] = None,
        stdout: IO[str] = sys.stdout, stderr: IO[str] = sys.stderr) -> int:
    from jupyter_client.manager import KernelManager

    from .kernel import WARM_UP_VARIABLE
    from .server import EngineKernelSpecManager

    if not os.path.isfile(script_source(script)):
        stderr.write("cdsw job: cannot read %s: no such file\n" % script)
        return 2
    runtime = tempfile.mkdtemp(prefix="cdsw-job-")  # the connection file stays private
    # IPC sockets in a private folder: no TCP port another process on the node could try
    km = KernelManager(kernel_spec_manager=EngineKernelSpecManager(), kernel_name="python3",
                       connection_file=os.path.join(runtime, "kernel.json"), transport="ipc",
                       ip=os.path.join(runtime, "kernel"))
    try:
        km.start_kernel(cwd=os.getcwd(), env=dict(os.environ, **{WARM_UP_VARIABLE: "0"}))
    except Exception as e:  # noqa: BLE001 - any failure to start is the run's one line
        stderr.write("cdsw job: the Python kernel did not start: %s\n" % e)
        shutil.rmtree(runtime, ignore_errors=True)
        return 2
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=START_TIMEOUT)
        hook = Outputs(stdout, stderr, outputs)
        setup = execute(km, client, prelude(script, args), hook, silent=True)
        if setup.get("status") != "ok":
            stderr.write("cdsw job: cannot set the script's arguments\n")
            return 2
        wait_for_start()  # a scheduled run: the kernel is ready, the script starts on time
        source = read_script(script, stderr)
        if source is None:
            return 2
        return exit_code(execute(km, client, source, hook))
    except RuntimeError as e:  # the kernel died
        stderr.write("cdsw job: the Python kernel stopped: %s\n" % e)
        return 2
    except Stopped:  # the kernel runs in a session of its own: it is not in the signalled group
        return 128 + signal.SIGTERM
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)
        shutil.rmtree(runtime, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stderr.write("usage: python -I -m cdsw_agent.engine.job SCRIPT [ARGS...]\n")
        sys.exit(2)
    signal.signal(signal.SIGTERM, _stop)
    path = os.environ.get(OUTPUTS_VARIABLE, "")
    if not path:
        sys.exit(run(argv[0], argv[1:]))
    with open(path, "a", encoding="utf-8") as outputs:
        sys.exit(run(argv[0], argv[1:], outputs))


if __name__ == "__main__":
    main()
