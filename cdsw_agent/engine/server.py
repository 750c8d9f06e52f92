"""`python -I -m cdsw_agent.engine.server ARGS`: jupyter_server as the engine runs it.

Started by the entrypoint (never by hand). Differences from `python -m jupyter_server`:

- the engine token comes from the file named by CDSW_ENGINE_TOKEN_FILE, which is removed at
  once; it is accepted only in the `Authorization: token ...` header the master's router sends,
  and it is in no page, no cookie, no server-info file and no environment;
- kernels start with the image's interpreter in isolated mode through cdsw_agent.engine.kernel
  (see kernel_argv), so nothing in the project runs before the user's own code;
- terminals run bash (never $SHELL, which project settings could point anywhere) with the
  engine's PATH and the login start-up files of $HOME, outside the project (engine/terminal.py).
"""

from __future__ import annotations

import hmac
import os
import sys
from typing import Any, List, Optional

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.serverapp import ServerApp
from traitlets import default
from traitlets.config import Config

from .entrypoint import TOKEN_FILE_VARIABLE

KERNEL_MODULE = "cdsw_agent.engine.kernel"
USER = User(username="cdsw", name="cdsw", display_name="CDSW")


def read_token(path: str) -> str:
    """The token in path; the file (and its private directory) are removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise SystemExit("cdsw engine: cannot read the engine token: %s" % e.strerror)
    with os.fdopen(fd) as f:
        token = f.read().strip()
    os.unlink(path)
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
    if not token:
        raise SystemExit("cdsw engine: the engine token file is empty")
    return token


class EngineIdentityProvider(IdentityProvider):
    """Accepts the master's token from the Authorization header only. Its `token` trait, which
    jupyter_server and JupyterLab write into pages (data-jupyter-api-token, page config), stays
    empty, and no login cookie is ever set: what reaches a browser holds no credential."""

    secret = ""  # set by main() before the server starts

    @default("token")
    def _token_default(self) -> str:
        return ""

    def get_token(self, handler: Any) -> Optional[str]:
        match = self.auth_header_pat.match(handler.request.headers.get("Authorization", ""))
        return match.group(2) if match else None

    async def get_user_token(self, handler: Any) -> Optional[User]:
        given = self.get_token(handler) or ""
        if self.secret and hmac.compare_digest(given.encode(), self.secret.encode()):
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
    R_ENVIRON_USER point into $HOME, see kernel_env)."""
    if "ipykernel_launcher" in argv or "ipykernel" in argv:
        return [sys.executable, "-I", "-m", KERNEL_MODULE, "-f", "{connection_file}"]
    if argv and os.path.basename(argv[0]) in ("R", "Rscript"):
        return [argv[0], "--no-restore", "--no-save"] + argv[1:]
    return argv


def kernel_env(env: dict) -> dict:
    home = os.environ.get("HOME", "")
    out = dict(env)
    if home:
        out.setdefault("R_PROFILE_USER", os.path.join(home, ".Rprofile"))
        out.setdefault("R_ENVIRON_USER", os.path.join(home, ".Renviron"))
    return out


class EngineKernelSpecManager(KernelSpecManager):
    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
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

    def init_webapp(self) -> None:
        super().init_webapp()
        from .spark_ui import handlers  # the session's Spark UI (engine/spark_ui.py)

        self.web_app.add_handlers(".*$", handlers(self.base_url))


def shell_command() -> List[str]:
    from .terminal import shell_command as terminal_shell  # the engine's PATH, $HOME's start-up

    return terminal_shell()


def config() -> Config:
    c = Config()
    c.ServerApp.identity_provider_class = EngineIdentityProvider
    c.ServerApp.kernel_spec_manager_class = EngineKernelSpecManager
    c.ServerApp.terminado_settings = {"shell_command": shell_command()}
    return c


def main(argv: Optional[List[str]] = None) -> None:
    path = os.environ.pop(TOKEN_FILE_VARIABLE, "")
    if not path:
        raise SystemExit("cdsw engine: %s is not set; start the engine with "
                         "`python -I -m cdsw_agent.engine`" % TOKEN_FILE_VARIABLE)
    EngineIdentityProvider.secret = read_token(path)
    EngineServerApp.launch_instance(argv=sys.argv[1:] if argv is None else argv, config=config())


if __name__ == "__main__":
    main()
