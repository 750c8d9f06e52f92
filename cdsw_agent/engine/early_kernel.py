"""The session's Python kernel, started by the entrypoint and taken over by jupyter_server.

Why: a session's first answer waits for two Python start-ups, jupyter_server's (about 0.5 s on a
gateway) and the kernel's (ipykernel and IPython, about as long). The server used to start the
kernel once it had started itself, so the two ran one after the other. The entrypoint now starts
the kernel first (kernel_launch.start_python_kernel), then becomes jupyter_server by exec; the
kernel, still its child, starts while the server does, on the node's other core.

How: jupyter_client starts kernels through provisioners (its documented extension point). The
server uses EarlyKernelProvisioner, which for the first start of the session's kernelspec takes
the running kernel (its process and connection file) instead of launching one, and otherwise is
jupyter_client's LocalProvisioner: a restart, another kernel, or an early kernel that is gone
start as always. The early kernel is the same program with the same environment and working
directory as the one the server would have started (kernel_launch.py).
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any, ClassVar, Dict, List, Optional

from jupyter_client.provisioning import KernelProvisionerFactory, LocalProvisioner
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase

from .kernel_launch import PYTHON_KERNELSPEC, StartedKernel, kernel_env, python_kernel_argv

PROVISIONER_NAME = "cdsw-early-kernel"
LOCAL_PROVISIONER = "local-provisioner"  # jupyter_client's default


class ChildProcess:
    """What LocalProvisioner uses of a Popen, for a child this process did not Popen (it was
    started before the exec that made this process jupyter_server)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: Optional[int] = None
        self.stdin = self.stdout = self.stderr = None

    def poll(self) -> Optional[int]:
        return self._wait(os.WNOHANG)

    def wait(self, timeout: Optional[float] = None) -> int:
        code = self._wait(0)
        return code if code is not None else 0

    def _wait(self, flags: int) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere: it has ended, how is not known
                self.returncode = -1
            else:
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class EarlyKernelProvisioner(LocalProvisioner):  # type: ignore[misc]
    waiting: ClassVar[Optional[StartedKernel]] = None  # set by engine.server, taken once
    _taking: Optional[StartedKernel] = None

    @classmethod
    def take(cls, kernel_name: str) -> Optional[StartedKernel]:
        early = cls.waiting
        if early is None or kernel_name != PYTHON_KERNELSPEC:
            return None
        cls.waiting = None
        return early

    async def pre_launch(self, **kwargs: Any) -> Dict[str, Any]:
        early = self.take(self.parent.kernel_name)
        info = _connection_info(early) if early is not None else None
        # taken only when it is what the server would start: the same command line (an image
        # whose python3 kernelspec is not ipykernel's gets its own) and environment (the
        # engine's own additions only, kernel_launch.kernel_env)
        if early is None or info is None \
                or list(self.kernel_spec.argv) != python_kernel_argv("{connection_file}") \
                or dict(self.kernel_spec.env or {}) != kernel_env({}) \
                or ChildProcess(early.pid).poll() is not None:
            if early is not None:
                discard(early)
            return await super().pre_launch(**kwargs)
        self.parent.load_connection_info(info)  # its ports and key: jupyter writes its own file
        self._taking = early
        kwargs.pop("extra_arguments", None)
        kwargs = await KernelProvisionerBase.pre_launch(self, **kwargs)
        kwargs["cmd"] = python_kernel_argv(early.connection_file)
        return kwargs

    async def launch_kernel(self, cmd: List[str], **kwargs: Any) -> Any:
        early, self._taking = self._taking, None
        if early is None:
            return await super().launch_kernel(cmd, **kwargs)
        self.process = ChildProcess(early.pid)
        self.pid = early.pid
        try:
            self.pgid = os.getpgid(early.pid)
        except OSError:
            self.pgid = None
        self.cwd = kwargs.get("cwd") or os.getcwd()
        self.connection_info = self.parent.get_connection_info()
        self.parent.log.info("cdsw engine: took over the kernel started with the engine (pid %d)",
                             early.pid)
        return self.connection_info


def _connection_info(early: StartedKernel) -> Optional[Dict[str, Any]]:
    try:
        with open(early.connection_file) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def discard(early: StartedKernel) -> None:
    """Ends a kernel started with the engine that nobody took (its own process group)."""
    try:
        os.killpg(early.pid, signal.SIGKILL)
    except OSError:
        pass
    ChildProcess(early.pid).wait()
    try:
        os.unlink(early.connection_file)
    except OSError:
        pass


def install(early: StartedKernel, server: Any = None) -> bool:
    """Makes EarlyKernelProvisioner the provisioner of kernels this server starts, waiting with
    the early kernel. False when jupyter_client cannot use it, or when the user's Jupyter
    configuration chose another default provisioner (theirs starts their kernels, as before);
    the caller then ends the early kernel."""
    from importlib.metadata import EntryPoint

    try:
        # with the server as parent, the factory reads the server's configuration (the
        # user's $HOME/.jupyter), as jupyter_client's own instance() calls would
        factory = KernelProvisionerFactory.instance(parent=server)
        if factory.default_provisioner_name != LOCAL_PROVISIONER:
            return False
        # the class is ours, not an installed distribution's: engine images carry the engine
        # package without its metadata, so it is registered here rather than as an entry point
        factory.provisioners[PROVISIONER_NAME] = EntryPoint(
            PROVISIONER_NAME, "%s:%s" % (__name__, EarlyKernelProvisioner.__name__),
            KernelProvisionerFactory.GROUP_NAME)
        factory.default_provisioner_name = PROVISIONER_NAME
    except Exception:  # noqa: BLE001 - another jupyter_client: start kernels as it does
        return False
    EarlyKernelProvisioner.waiting = early
    return True
