"""A master with several HTTP workers (setting master_http_workers > 1): its processes.

The master process binds the listening sockets (the workbench port, and the engine-content port
when there is one), starts that many worker processes that accept on them (the kernel spreads
the connections), and becomes their controller (server/controller.py): the control loops,
every launch, the summed counts, served to the workers on its Unix socket. A worker that dies is
started again after a second. On SIGTERM the workers stop first, each finishing the requests it
has within the graceful-shutdown time, then the controller stops its loops.

Workers are started with multiprocessing's spawn (a fresh interpreter: the controller's threads
are not copied into it), as uvicorn starts its own workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ..settings import Settings
from . import controller, listen

log = logging.getLogger(__name__)
RESPAWN_SECONDS = 1.0
CONTROL_KEEP_ALIVE_SECONDS = 3600  # the workers' connections to the controller stay open
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def control_socket(path: str) -> socket.socket:
    """The controller's Unix socket, for the master's user alone (0600 before anyone can
    connect: the folder is 0700)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    if os.path.exists(path):
        os.unlink(path)  # a previous master's; the master lock says none runs now
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def _end_with_controller() -> None:
    """SIGTERM to this worker when the controller ends, even killed: orphaned workers would
    keep the port from the next master."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError) as e:
        log.warning("this HTTP worker will not end with its controller: %s", e)
    if os.getppid() == 1:  # the controller ended before that took effect
        raise SystemExit(0)


def worker_main(values: Dict[str, Any], sources: Dict[str, Any], sockets: List[socket.socket],
                control_path: str, token: str, uvicorn_options: Dict[str, Any]) -> None:
    """One HTTP worker: the master's application with a client of the controller."""
    import uvicorn

    from ..logs import setup_logging
    from ..store.db import Database
    from ..store.lock import MASTER_APPLICATION_NAME
    from .app import create_app
    from .controller_client import ControllerClient

    _end_with_controller()
    settings = Settings(values, sources)
    setup_logging(settings.log_level, settings.secret_values())
    # SIGTERM keeps its default until uvicorn takes it (a worker told to stop while it starts
    # ends at once); after its graceful shutdown uvicorn raises it again, which ends the worker
    db = Database(settings.database_url, application_name=MASTER_APPLICATION_NAME)
    app = create_app(settings, db, controller=ControllerClient(control_path, token))
    uvicorn.Server(uvicorn.Config(app, **uvicorn_options)).run(sockets=sockets)


class Workers:
    """The worker processes: started, started again when one dies, stopped."""

    def __init__(self, count: int, kwargs: Dict[str, Any],
                 ended: Callable[[str], None]) -> None:
        self.count, self.kwargs, self.ended = count, kwargs, ended
        self._context = multiprocessing.get_context("spawn")
        self._procs: List[Optional[Any]] = [None] * count
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="cdsw-http-workers",
                                        daemon=True)

    def _spawn(self, index: int) -> None:
        proc = self._context.Process(target=worker_main, kwargs=self.kwargs,
                                     name="cdsw-http-worker-%d" % index)
        proc.start()
        self._procs[index] = proc
        log.info("HTTP worker %d started (pid %d)", index, proc.pid)

    def start(self) -> None:
        with self._lock:
            for index in range(self.count):
                self._spawn(index)
        self._thread.start()

    def pids(self) -> List[int]:
        with self._lock:
            return [p.pid for p in self._procs if p is not None and p.is_alive()]

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for index, proc in enumerate(self._procs):
                    if proc is None or proc.is_alive() or self._stopping.is_set():
                        continue
                    self.ended(str(proc.pid))
                    log.warning("HTTP worker %d (pid %d) ended (exit status %s); starting it "
                                "again", index, proc.pid, proc.exitcode)
                    proc.close()
                    self._procs[index] = None
            if self._stopping.wait(RESPAWN_SECONDS):
                return
            with self._lock:
                for index, proc in enumerate(self._procs):
                    if proc is None and not self._stopping.is_set():
                        self._spawn(index)

    def stop(self, timeout: float) -> None:
        """SIGTERM to every worker, which finishes its requests; SIGKILL after `timeout`."""
        self._stopping.set()
        with self._lock:
            procs = [p for p in self._procs if p is not None]
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("HTTP worker pid %d did not stop in %d s; killing it", proc.pid,
                            timeout)
                proc.kill()
                proc.join(5)
            self.ended(str(proc.pid))


class ControlledMaster:
    """The controller with its workers: run() in the foreground until stop() or SIGTERM."""

    def __init__(self, app: Any, settings: Settings, host: str, port: int,
                 **uvicorn_options: Any) -> None:
        import uvicorn

        state = app.state.server
        self.sockets = listen.sockets(settings, host, port)
        self.path = controller.socket_path(settings.data_dir)
        self.control = control_socket(self.path)
        token = secrets.token_urlsafe(32)
        graceful = float(uvicorn_options.get("timeout_graceful_shutdown") or 30)
        self.workers = workers = Workers(settings.master_http_workers, dict(
            values=settings.as_dict(), sources={s.name: src for s, _, src in settings.items()},
            sockets=self.sockets, control_path=self.path, token=token,
            uvicorn_options=uvicorn_options),
            lambda worker: controller.worker_ended(state, worker))
        self.stop_timeout = graceful + 5

        class Controller(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                # workers first (they may call the controller while they finish), then this
                if not getattr(self, "leaving", False):
                    self.leaving = True

                    def leave() -> None:
                        workers.stop(graceful + 5)
                        self.should_exit = True
                    threading.Thread(target=leave, name="cdsw-master-stop", daemon=True).start()

        self.server = Controller(uvicorn.Config(
            controller.ControlApp(app, state, token), log_config=None, access_log=False,
            lifespan="on", timeout_keep_alive=CONTROL_KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=graceful))
        self.count = settings.master_http_workers

    def run(self) -> None:
        log.info("%d HTTP workers; this process controls them on %s", self.count, self.path)
        self.workers.start()
        try:
            self.server.run(sockets=[self.control])
        finally:
            self.workers.stop(self.stop_timeout)
            for sock in self.sockets + [self.control]:
                sock.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def stop(self) -> None:
        self.server.handle_exit(signal.SIGTERM, None)


def serve(app: Any, settings: Settings, host: str, port: int, **uvicorn_options: Any) -> None:
    """Runs the master as controller + workers until SIGTERM/SIGINT (in the foreground)."""
    ControlledMaster(app, settings, host, port, **uvicorn_options).run()
