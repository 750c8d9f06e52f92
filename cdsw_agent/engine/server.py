"""`python -I -m cdsw_agent.engine.server ARGS`: jupyter_server as the engine runs it.

Started by the entrypoint (never by hand). Differences from `python -m jupyter_server`:

- the engine holds no token, only its SHA-256 (CDSW_ENGINE_TOKEN_SHA256, removed from
  os.environ at once, so kernels and terminals do not inherit it); a request is let in when the
  digest of its `Authorization: token ...` header matches. Nothing a browser receives carries a
  credential (no page, no cookie, no server-info file);
- the server is not dumpable (prctl PR_SET_DUMPABLE 0): kernels and terminals run as the same
  user, but cannot read its memory (/proc/PID/mem, ptrace), where the master's requests arrive;
- kernels start with the image's interpreter in isolated mode through cdsw_agent.engine.kernel
  (see kernel_argv), so nothing in the project runs before the user's own code;
- terminals run bash (never $SHELL, which project settings could point anywhere) with the
  engine's PATH and the login start-up files of $HOME, outside the project (engine/terminal.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hmac
import os
import sys
from typing import Any, Dict, List, Optional

# jupyter_events (imported by jupyter_server) pulls in jsonschema's optional "iri"/"uri" format
# checker, rfc3987_syntax, which builds a Lark grammar when imported: 0.9 of the 1.4 s this
# module took to import, on every engine start, for checking the formats of jupyter_server's
# own event schemas. A None entry makes its import fail, and jsonschema then leaves those
# formats unchecked, as it does wherever the package is not installed.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager  # noqa: E402
from jupyter_core.paths import jupyter_runtime_dir  # noqa: E402
from jupyter_server.auth.identity import IdentityProvider, User  # noqa: E402
from jupyter_server.serverapp import ServerApp  # noqa: E402
from traitlets import default  # noqa: E402
from traitlets.config import Config  # noqa: E402

from . import scala_repl  # noqa: E402
from .entrypoint import DIGEST_VARIABLE, PRESTART_VARIABLE, token_digest  # noqa: E402
from .kernel_launch import (EARLY_KERNEL_VARIABLE, StartedKernel, kernel_env,  # noqa: E402
                            parse_variable, python_kernel_argv)

PRESTART_TIMEOUT = 60.0
USER = User(username="cdsw", name="cdsw", display_name="CDSW")


PR_SET_DUMPABLE = 4


def make_undumpable() -> None:
    """No process of the same user may read this one's memory, /proc/PID/environ or attach to
    it; kernels exec a new program, which makes them dumpable again (they need nothing more)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise SystemExit("cdsw engine: prctl(PR_SET_DUMPABLE, 0) failed: %s"
                         % os.strerror(ctypes.get_errno()))


class EngineIdentityProvider(IdentityProvider):
    """Accepts the master's token from the Authorization header only. Its `token` trait, which
    jupyter_server and JupyterLab write into pages (data-jupyter-api-token, page config), stays
    empty, and no login cookie is ever set: what reaches a browser holds no credential."""

    digest = ""  # the token's SHA-256, set by main() before the server starts

    @default("token")
    def _token_default(self) -> str:
        return ""

    def get_token(self, handler: Any) -> Optional[str]:
        match = self.auth_header_pat.match(handler.request.headers.get("Authorization", ""))
        return match.group(2) if match else None

    async def get_user_token(self, handler: Any) -> Optional[User]:
        given = self.get_token(handler) or ""
        if given and self.digest and hmac.compare_digest(token_digest(given).encode(),
                                                         self.digest.encode()):
            if type(handler).__module__.startswith("jupyter_server_proxy"):
                # a session's web app gets the request, never the engine's token: whoever it
                # reached (a log line, a page) could use the engine without the master
                del handler.request.headers["Authorization"]
            return USER
        return None

    def get_user_cookie(self, handler: Any) -> None:
        return None

    def set_login_cookie(self, handler: Any, user: User) -> None:
        pass

    @property
    def login_available(self) -> bool:
        return False


def kernel_argv(name: str, argv: List[str]) -> List[str]:
    """The command line of a kernel: Python kernels go through the isolated launcher; R ignores
    .Rprofile, .Renviron and .RData in the working directory (R_PROFILE_USER and
    R_ENVIRON_USER point into $HOME, see kernel_launch.kernel_env)."""
    if "ipykernel_launcher" in argv or "ipykernel" in argv:
        return python_kernel_argv("{connection_file}")
    if argv and os.path.basename(argv[0]) in ("R", "Rscript"):
        return [argv[0], "--no-restore", "--no-save"] + argv[1:]
    return argv


class EngineKernelSpecManager(KernelSpecManager):
    """The image's kernelspecs, and the engine's Scala kernel (engine/scala_kernel.py) wherever
    the engine has a Spark with Scala and a Java (the cluster clients), also in an image built
    without --with-scala and in the local backend's engine."""

    _scala_dir = ""

    def scala_spec_dir(self) -> str:
        if not self._scala_dir and scala_repl.available(os.environ):
            self._scala_dir = scala_repl.write_kernelspec(
                os.path.join(jupyter_runtime_dir(), "kernelspecs"), sys.executable)
        return self._scala_dir

    def find_kernel_specs(self) -> Dict[str, str]:
        specs = super().find_kernel_specs()
        if scala_repl.KERNEL_NAME not in specs and self.scala_spec_dir():
            specs[scala_repl.KERNEL_NAME] = self.scala_spec_dir()
        return specs

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name == scala_repl.KERNEL_NAME and \
                kernel_name not in super().find_kernel_specs() and self.scala_spec_dir():
            spec = KernelSpec.from_resource_dir(self.scala_spec_dir())
        else:
            spec = super().get_kernel_spec(kernel_name)
        spec.argv = kernel_argv(kernel_name, list(spec.argv))
        spec.env = kernel_env(dict(spec.env or {}))
        return spec


class EngineServerApp(ServerApp):
    # The server-info file (jpserver-PID.json) would hold the token where kernels can read it.
    def write_server_info_file(self) -> None:
        pass

    def remove_server_info_file(self) -> None:
        pass

    def write_browser_open_files(self) -> None:
        pass

    prestart_kernel = ""  # a kernelspec to start before the server listens (main() sets it)
    early_kernel: Optional[StartedKernel] = None  # that kernel, started by the entrypoint

    def init_webapp(self) -> None:
        super().init_webapp()
        from .spark_ui import handlers  # the session's Spark UI (engine/spark_ui.py)

        self.web_app.add_handlers(".*$", handlers(self.base_url))

    def init_httpserver(self) -> None:
        """Starts the session's kernel, then listens: the kernel's own start-up (imports, IPython)
        overlaps the master seeing the server answer, and whoever sees the server answer finds
        the kernel in GET /api/kernels (the master adopts it instead of creating one). A Python
        kernel was already started by the entrypoint, alongside this server (early_kernel.py):
        starting it here takes that one over."""
        from . import early_kernel

        early = self.early_kernel
        if early is not None and not (self.prestart_kernel and early_kernel.install(early, self)):
            early_kernel.discard(early)
            early = None
        if self.prestart_kernel:
            try:
                self.io_loop.run_sync(lambda: self.kernel_manager.start_kernel(
                    kernel_name=self.prestart_kernel), timeout=PRESTART_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - the master creates one and says why not
                self.log.warning("cdsw engine: kernel %s not started ahead: %s",
                                 self.prestart_kernel, e)
        if early is not None and early_kernel.EarlyKernelProvisioner.waiting is early:
            early_kernel.EarlyKernelProvisioner.waiting = None  # not taken: it would run on
            early_kernel.discard(early)
        super().init_httpserver()


def shell_command() -> List[str]:
    from .terminal import shell_command as terminal_shell  # the engine's PATH, $HOME's start-up

    return terminal_shell()


def config() -> Config:
    c = Config()
    c.ServerApp.identity_provider_class = EngineIdentityProvider
    c.ServerApp.kernel_spec_manager_class = EngineKernelSpecManager
    c.ServerApp.terminado_settings = {"shell_command": shell_command()}
    # a session's web apps: proxy/PORT/ (HTTP and websockets) to 127.0.0.1:PORT in the engine,
    # after the same token check as every engine request; nothing else it can start or reach
    c.ServerApp.jpserver_extensions = {"jupyter_server_proxy": True}
    c.ServerProxy.host_allowlist = ["localhost", "127.0.0.1"]
    c.ServerProxy.servers = {}
    return c


def main(argv: Optional[List[str]] = None) -> None:
    digest = os.environ.pop(DIGEST_VARIABLE, "")
    if not digest:
        raise SystemExit("cdsw engine: %s is not set; start the engine with "
                         "`python -I -m cdsw_agent.engine`" % DIGEST_VARIABLE)
    make_undumpable()
    EngineIdentityProvider.digest = digest
    EngineServerApp.prestart_kernel = os.environ.pop(PRESTART_VARIABLE, "")
    EngineServerApp.early_kernel = parse_variable(os.environ.pop(EARLY_KERNEL_VARIABLE, ""))
    EngineServerApp.launch_instance(argv=sys.argv[1:] if argv is None else argv, config=config())


if __name__ == "__main__":
    main()
