"""`python -I -m cdsw_agent.engine.scala_kernel -f CONNECTION_FILE`: the Scala kernel of an engine.

An ipykernel kernel whose cells run in Spark's own Scala REPL (engine/scala_repl.py): the JVM
starts in the background when the kernel does, and the first cell waits for it. Cells run one at
a time in a worker thread while this thread sends what the code prints as it comes; an interrupt
cancels the running Spark jobs (the JVM cannot stop arbitrary code), and the cell ends as
interrupted once the code returns.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from ipykernel.kernelbase import Kernel

from .scala_repl import LANGUAGE_INFO, STARTUP_TIMEOUT, Interpreter, ScalaUnavailable, error_parts


class ScalaKernel(Kernel):
    implementation = "cdsw-scala"
    implementation_version = "1"
    language = "scala"
    language_info = LANGUAGE_INFO
    banner = "Scala on Spark (the cluster's Spark REPL); `spark` and `sc` are ready"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scala")
        self._interp: Optional[Interpreter] = None
        self._startup_error = ""
        # the JVM and the compiler's first run take a while: started now, awaited by requests
        self._ready: Future = self._pool.submit(self._start)

    def _start(self) -> None:
        try:
            interp = Interpreter(os.environ)
            app = "Scala session %s" % os.environ.get("CDSW_SESSION_ID", "")
            interp.start(app.strip())
            self._interp = interp
        except ScalaUnavailable as e:
            self._startup_error = str(e)
        except Exception as e:  # noqa: BLE001 - said in every cell instead of a dead kernel
            self._startup_error = "the Scala kernel could not start: %s: %s" % (
                type(e).__name__, str(e).splitlines()[0] if str(e) else "")

    def _wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> Optional[Interpreter]:
        try:
            self._ready.result(timeout=timeout)
        except Exception:  # noqa: BLE001 - a timeout: still starting
            return None
        return self._interp

    def _stream(self, name: str, text: str) -> None:
        if text:
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

    def _error_reply(self, ename: str, evalue: str, traceback: List[str]) -> Dict[str, Any]:
        content = {"ename": ename, "evalue": evalue, "traceback": traceback}
        self.send_response(self.iopub_socket, "error", content)
        return dict(content, status="error", execution_count=self.execution_count)

    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: Any = None, allow_stdin: bool = False,
                         **kwargs: Any) -> Dict[str, Any]:
        interp = self._wait_ready()
        if interp is None:
            why = self._startup_error or "the Scala kernel is still starting; run the cell again"
            return self._error_reply("ScalaUnavailable", why, [why])
        if not code.strip():
            return {"status": "ok", "execution_count": self.execution_count,
                    "payload": [], "user_expressions": {}}
        running = self._pool.submit(interp.interpret, code)
        interrupted = False
        next_cancel = 0.0
        pending = ""
        while True:
            try:
                status, echo = running.result(timeout=0.1)
                break
            except KeyboardInterrupt:
                interrupted = True
            except Exception as e:  # noqa: BLE001 - the gateway broke: said as the cell's error
                if running.done():
                    status, echo = "Error", "%s: %s" % (type(e).__name__, e)
                    break
            if interrupted and time.monotonic() >= next_cancel:
                # again every second: a job the code starts after the interrupt is cancelled too
                interp.cancel_spark_jobs()
                next_cancel = time.monotonic() + 1.0
            pending = self._drain(interp, pending, silent)
        marker = interp.flush_marker()
        self._drain(interp, pending, silent, until=marker)
        if status == "Success":
            if not silent:
                self._stream("stdout", echo)
            return {"status": "ok", "execution_count": self.execution_count,
                    "payload": [], "user_expressions": {}}
        ename, evalue, traceback = error_parts(status, echo, code)
        if interrupted:
            ename, evalue = "KeyboardInterrupt", "interrupted; running Spark jobs were cancelled"
        return self._error_reply(ename, evalue, traceback)

    def _drain(self, interp: Interpreter, pending: str, silent: bool,
               until: Optional[str] = None) -> str:
        """Sends what the JVM printed so far; with until, waits (up to 10 s) for that marker."""
        deadline = time.monotonic() + 10.0
        while True:
            try:
                pending += interp.output.get(timeout=0.05 if until else 0.0)
            except queue.Empty:
                if until is None or time.monotonic() > deadline:
                    break
                continue
            if until and until in pending:
                before, _, after = pending.partition(until)
                if not silent:
                    self._stream("stdout", before)
                return after
        if not silent:
            self._stream("stdout", pending)
        return ""

    async def do_complete(self, code: str, cursor_pos: int) -> Dict[str, Any]:
        interp = self._wait_ready(timeout=5.0)
        if interp is None:
            return {"status": "ok", "matches": [], "cursor_start": cursor_pos,
                    "cursor_end": cursor_pos, "metadata": {}}
        matches, start = self._pool.submit(interp.complete, code, cursor_pos).result()
        return {"status": "ok", "matches": matches, "cursor_start": start,
                "cursor_end": cursor_pos, "metadata": {}}

    async def do_is_complete(self, code: str) -> Dict[str, Any]:
        return {"status": "unknown"}

    async def do_shutdown(self, restart: bool) -> Dict[str, Any]:
        if self._interp is not None:
            self._interp.shutdown()
        return {"status": "ok", "restart": restart}


def main(argv: Optional[List[str]] = None) -> None:
    from ipykernel.kernelapp import IPKernelApp

    # the JVM's stderr (Spark's log) stays the engine log: no capture of fd 2 into the cells
    IPKernelApp.launch_instance(argv=sys.argv[1:] if argv is None else argv,
                                kernel_class=ScalaKernel, capture_fd_output=False)


if __name__ == "__main__":
    main()
