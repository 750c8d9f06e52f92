"""What goes into an engine image: the recipe, its options and the CDSW image contract.

Everything that decides an image's content is declared here, so the content tag can be derived
from it. Bump RECIPE_VERSION whenever the way an image is assembled changes (build.py) without any
of the declared inputs changing.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .. import __version__
from ..errors import UserError

# 2: the engine user's home is USER_HOME; 3: no setuid programs; 4: git through GIT_GUARD;
# 5: jupyter-server-proxy (a session's web apps)
RECIPE_VERSION = "5"

# Where images live locally; a registry (settings.engine_registry) is prefixed when pushing.
REPOSITORY = "cdsw/engine"

# The CDSW engine contract: who runs the workload and where.
ENGINE_USER = "cdsw"
ENGINE_UID = 8536
ENGINE_HOME = "/home/cdsw"  # the project: the working directory, as in CDSW
USER_HOME = "/home/cdsw-user"  # $HOME (and the passwd entry): the launcher's own folder, mounted
VENV = "/opt/cdsw/venv"
MANIFEST_PATH = "/opt/cdsw/image.json"
# PATH of every engine image: the virtualenv first (python, pip, jupyter); engines put the
# cluster's clients right after it (clientconfig.distributions)
IMAGE_PATH = VENV + "/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# `git` on PATH ahead of /usr/bin/git: runs a repository's own commands (hooks, drivers) only
# as the engine's person trusted them (cdsw_agent/engine/git_guard.py)
GIT_GUARD = "/usr/local/bin/git"

LABEL_PREFIX = "com.cdsw.engine"
LABEL_MARKER = LABEL_PREFIX  # value "true" on every engine image; `cdsw images list` filters on it

SUITE = "bookworm"
# Python that SUITE ships; the wheelhouse is downloaded for it before the root file system exists.
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}

BASE_PACKAGES: Tuple[str, ...] = (
    "python3",
    "python3-venv",
    "ca-certificates",
    "tini",
    "git",
    "openssh-client",
    "procps",
    "less",
    # Kerberos in the engine, as in CDSW: kinit/klist/kvno with the user's ticket cache
    # (KRB5CCNAME, cdsw_agent/kerberos/engine.py), and curl, whose Debian build does SPNEGO
    # (`curl --negotiate -u :`), the way users reach WebHDFS, YARN or Livy on a secure cluster
    "krb5-user",
    "curl",
)
R_PACKAGES: Tuple[str, ...] = ("r-base-core", "r-cran-irkernel")

# Top-level Python packages; their dependencies are resolved once when the wheelhouse is made and
# recorded in the image (/opt/cdsw/image.json). Pinned so that every host builds the same image.
BASE_REQUIREMENTS: Tuple[str, ...] = (
    "jupyter_server==2.21.1",
    "ipykernel==7.4.0",
    "terminado==0.18.1",
    "matplotlib==3.11.2",
    "pandas==3.1.1",
    # interactive plots offline: the console draws the figures (application/vnd.plotly.v1+json)
    # with plotly.js 4.1.1 from the workbench (web/package.json pins the same version)
    "plotly==7.1.0",
    # `import mlflow` tracks into the workbench's /mlflow with no setup: engines get
    # MLFLOW_TRACKING_URI, a short-lived token and the project's experiment
    # (experiments/mlflow_engine.py); the client only, no MLflow server
    "mlflow-skinny==3.18.0",
    # a session's web apps (Dash, Streamlit, Shiny, TensorBoard...) on CDSW_APP_PORT, served by
    # the engine's jupyter_server under proxy/PORT/ (HTTP and websockets), behind its token check
    "jupyter-server-proxy==4.6.0",
)
JUPYTERLAB_REQUIREMENTS: Tuple[str, ...] = ("jupyterlab==4.6.6",)

_DEB_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_WHEEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


def host_arch() -> str:
    """Debian architecture name of this host (amd64, arm64)."""
    machine = platform.machine().lower()
    if machine not in _DEB_ARCH:
        raise UserError("engine images can be built on x86_64 or aarch64 hosts only, not %s" % machine)
    return _DEB_ARCH[machine]


@dataclass(frozen=True)
class Recipe:
    """One engine image flavour. Two recipes that compare equal give the same image."""

    suite: str = SUITE
    arch: str = field(default_factory=host_arch)
    with_r: bool = False
    with_jupyterlab: bool = False
    # the Scala kernel (engine/scala_kernel.py) registered; it runs on the cluster's Spark and
    # Java, mounted into engines (clientconfig), so the image itself gains no Spark or JVM
    with_scala: bool = False

    @property
    def python_version(self) -> str:
        try:
            return SUITE_PYTHON[self.suite]
        except KeyError:
            raise UserError("unknown Debian suite %r; expected one of %s"
                            % (self.suite, ", ".join(sorted(SUITE_PYTHON))))

    @property
    def wheel_arch(self) -> str:
        return _WHEEL_ARCH[self.arch]

    @property
    def packages(self) -> List[str]:
        pkgs = list(BASE_PACKAGES)
        if self.with_r:
            pkgs += R_PACKAGES
        return sorted(pkgs)

    @property
    def requirements(self) -> List[str]:
        reqs = list(BASE_REQUIREMENTS)
        if self.with_jupyterlab:
            reqs += JUPYTERLAB_REQUIREMENTS
        return reqs

    @property
    def python_imports(self) -> List[str]:
        """Modules a finished image must import (checked before it is imported into Docker)."""
        mods = ["jupyter_server", "ipykernel", "terminado", "pandas", "matplotlib", "plotly",
                "mlflow", "jupyter_server_proxy", "cdsw_agent.engine",
                "cdsw"]
        return mods + (["jupyterlab"] if self.with_jupyterlab else []) \
            + (["cdsw_agent.engine.scala_kernel"] if self.with_scala else [])

    @property
    def kernels(self) -> List[str]:
        return ["python3"] + (["ir"] if self.with_r else []) + (["scala"] if self.with_scala else [])

    @property
    def editors(self) -> List[str]:
        return ["jupyter-server", "terminal"] + (["jupyterlab"] if self.with_jupyterlab else [])

    @property
    def flavour(self) -> str:
        """Short name used in tags: py, py-r, py-lab, py-r-lab, py-scala, py-r-scala-lab."""
        return "-".join(["py"] + (["r"] if self.with_r else []) + (["scala"] if self.with_scala else [])
                        + (["lab"] if self.with_jupyterlab else []))

    def labels(self, content_sha256: str) -> Dict[str, str]:
        return {
            LABEL_MARKER: "true",
            LABEL_PREFIX + ".version": __version__,
            LABEL_PREFIX + ".recipe": RECIPE_VERSION,
            LABEL_PREFIX + ".flavour": self.flavour,
            LABEL_PREFIX + ".content": content_sha256,
            LABEL_PREFIX + ".suite": self.suite,
            LABEL_PREFIX + ".python": self.python_version,
            LABEL_PREFIX + ".kernels": ",".join(self.kernels),
            LABEL_PREFIX + ".editors": ",".join(self.editors),
            LABEL_PREFIX + ".user": "%s:%d" % (ENGINE_USER, ENGINE_UID),
        }

    def env(self) -> Dict[str, str]:
        return {
            "PATH": IMAGE_PATH,
            "HOME": USER_HOME,
            "USER": ENGINE_USER,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "VIRTUAL_ENV": VENV,
        }

    def docker_changes(self, content_sha256: str = "") -> List[str]:
        """Dockerfile instructions `docker import --change` applies to the root file system.

        With an empty content_sha256 this is the image configuration that goes into the hash."""
        changes = ["ENV %s=%s" % (k, v) for k, v in sorted(self.env().items())]
        changes += ['LABEL %s="%s"' % (k, v) for k, v in sorted(self.labels(content_sha256).items())]
        changes += [
            "USER %d:%d" % (ENGINE_UID, ENGINE_UID),
            "WORKDIR " + ENGINE_HOME,
            'ENTRYPOINT ["/usr/bin/tini", "--"]',
            'CMD ["%s/bin/python", "-I", "-m", "cdsw_agent.engine"]' % VENV,
            "EXPOSE 8888",
        ]
        return changes
