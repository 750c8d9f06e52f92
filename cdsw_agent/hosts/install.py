"""What `cdsw hosts add` puts on a worker host, rendered as text (unit-tested without a remote).

Layout under the prefix (default /opt/cdsw):
  wheels/              the offline wheelhouse copied from the master (no network needed there)
  agent/VERSION/       a virtualenv with that agent version; current -> agent/VERSION
  etc/cdsw.properties  the worker's settings, mode 0600 (it holds the cluster secret)
  etc/cdsw.conf        empty, so a stray /etc/cdsw/config/cdsw.conf is not read
  run/, log/           pid files and logs of the `background` service mode

Services: systemd units cdsw-docker.service and cdsw-worker.service where the remote runs
systemd; else, only when asked (`--services background`), the two roles as detached processes
with pid files (not restarted on failure or reboot: a fallback, not a service manager).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from ..errors import UserError
from ..settings import Settings
from ..settings.schema import SETTINGS

MIN_PYTHON = (3, 9)
SERVICE_MODES = ("auto", "systemd", "background")
ROLES = ("docker", "worker")  # start order; stopped in reverse
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Settings the workers share with the master: copied from the master's effective values.
CARRIED = ("master_host", "http_port", "tls_enable", "orchestrator", "log_level",
           "storage_backend", "storage_ssh_port", "storage_ssh_user", "storage_nfs_export",
           "engine_registry", "docker_registries", "docker_storage_driver", "cluster_client_kind",
           "spark_driver_allowed_networks", "krb5_conf", "java_home")
BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Plan:
    prefix: str = "/opt/cdsw"
    python: str = "python3"  # the remote's interpreter
    services: str = "auto"  # auto | systemd | background
    unit_dir: str = "/etc/systemd/system"
    dockerd: str = "dockerd"  # the host's dockerd_path setting

    @property
    def properties(self) -> str:
        return self.prefix + "/etc/cdsw.properties"

    @property
    def conf(self) -> str:
        return self.prefix + "/etc/cdsw.conf"

    @property
    def wheels(self) -> str:
        return self.prefix + "/wheels"

    @property
    def current(self) -> str:
        return self.prefix + "/current"

    def cdsw(self) -> str:
        return self.current + "/bin/cdsw"

    def unit_name(self, role: str) -> str:
        return "cdsw-%s.service" % role


def check_plan(plan: Plan) -> None:
    if not plan.prefix.startswith("/") or plan.prefix.rstrip("/") in ("", "/usr", "/etc", "/var"):
        raise UserError("--prefix %s: give an absolute directory of its own, such as /opt/cdsw"
                        % plan.prefix)
    if plan.services not in SERVICE_MODES:
        raise UserError("--services %s: choose one of %s" % (plan.services, ", ".join(SERVICE_MODES)))
    for value in (plan.prefix, plan.python, plan.unit_dir, plan.dockerd):
        if not re.fullmatch(r"[A-Za-z0-9_./+-]+", value):
            raise UserError("%r: only letters, digits and . _ / + - are allowed in paths" % value)


# --- settings
def parse_assignments(pairs: Iterable[str]) -> Dict[str, str]:
    """`--set KEY=VALUE` options (setting names as in `cdsw config schema`), checked."""
    out: Dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace(".", "_").replace("-", "_")
        if key.startswith("cdsw_"):
            key = key[5:]
        if not sep or key not in BY_NAME:
            raise UserError("--set %s: expected NAME=VALUE with a setting name from `cdsw config "
                            "schema`" % pair)
        if key in ("cluster_secret", "workbench_cluster"):
            raise UserError("--set %s: this one comes from the master and --cluster" % key)
        try:
            BY_NAME[key].parse(value)
        except ValueError as e:
            raise UserError("--set %s: %s" % (pair, e))
        out[key] = value
    return out


def _render_value(value: object) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    if "\n" in text or "\r" in text:
        raise UserError("a setting value holds a line break: %r" % text[:40])
    return text.replace("\\", "\\\\")


def worker_properties(settings: Settings, secret: str, cluster: str,
                      extra: Optional[Mapping[str, str]] = None) -> str:
    """The worker's cdsw.properties: the master's shared settings, the secret, the cluster,
    then the host's own (--set)."""
    if settings.master_host in ("127.0.0.1", "localhost", "::1"):
        raise UserError("master_host is %s: set cdsw.master.host (MASTER_IP) to the address "
                        "workers reach this master at" % settings.master_host)
    if not secret:
        raise UserError("the cluster secret is empty; start the master once or set "
                        "cdsw.cluster.secret")
    values: Dict[str, object] = {k: getattr(settings, k) for k in CARRIED if k in BY_NAME}
    values.update(cluster_secret=secret, workbench_cluster=cluster)
    values.update(extra or {})
    lines = ["# written by `cdsw hosts add` on the master; mode 0600: it holds the cluster secret"]
    for name, value in values.items():
        lines.append("%s=%s" % (BY_NAME[name].property_key, _render_value(value)))
    return "\n".join(lines) + "\n"


# --- systemd
def systemd_unit(plan: Plan, role: str) -> str:
    after = "network-online.target" + (" %s" % plan.unit_name("docker") if role == "worker" else "")
    requires = "Requires=%s\n" % plan.unit_name("docker") if role == "worker" else ""
    what = {"docker": "CDSW_DOCKER: the Docker daemon of this gateway",
            "worker": "CDSW_WORKER: joins the master's swarm and runs engines"}[role]
    return ("[Unit]\n"
            "Description=%s (cdsw hosts add)\n"
            "Wants=network-online.target\n"
            "After=%s\n"
            "%s"
            "\n[Service]\n"
            "Environment=CDSW_PROPERTIES=%s\n"
            "Environment=CDSW_CONF=%s\n"
            "ExecStart=%s role %s start\n"
            "Restart=on-failure\n"
            "RestartSec=5\n"
            "KillMode=mixed\n"
            "TimeoutStopSec=120\n"
            "\n[Install]\n"
            "WantedBy=multi-user.target\n"
            % (what, after, requires, plan.properties, plan.conf, plan.cdsw(), role))


# --- remote shell steps (each fed to `sh -s` on the remote)
def _q(value: str) -> str:
    return shlex.quote(value)


def _heredoc(path: str, text: str, mode: str) -> str:
    """Write text to path atomically with the given mode, from within the script (so its
    content never appears on a command line); sets `changed=1` when it differs."""
    tag = "CDSW_EOF_" + secrets.token_hex(8)
    if tag in text:  # practically impossible
        raise UserError("cannot quote a file for the remote")
    new = path + ".new"
    return ("(umask 077; cat > %s <<'%s'\n%s%s\n)\n"
            "chmod %s %s\n"
            "if cmp -s %s %s; then rm -f %s; else mv -f %s %s; changed=1; fi\n"
            % (_q(new), tag, text, tag, mode, _q(new), _q(new), _q(path), _q(new), _q(new),
               _q(path)))


def probe_script(plan: Plan) -> str:
    """Prints key=value facts about the remote (parsed by parse_facts)."""
    p = plan
    running = "\n".join(
        'echo "running_%s=$(is_running %s)"' % (role, role) for role in ROLES)
    return """set -u
py=%(python)s
echo "uid=$(id -u)"
echo "hostname=$(hostname)"
echo "python=$("$py" -c 'import sys; print("%%d.%%d" %% sys.version_info[:2])' 2>/dev/null || true)"
echo "venv=$("$py" -c 'import venv, ensurepip' >/dev/null 2>&1 && echo yes || echo no)"
echo "dockerd=$(PATH=%(path)s command -v %(dockerd)s || true)"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo systemd=yes; else echo systemd=no; fi
echo "installed=$([ -f %(current)s/.complete ] && basename "$(readlink %(current)s)" || true)"
is_running() {
  if [ -f %(unit_dir)s/cdsw-$1.service ] && command -v systemctl >/dev/null 2>&1 && systemctl is-active -q cdsw-$1.service 2>/dev/null; then echo yes; return; fi
  if [ -f %(prefix)s/run/$1.pid ] && kill -0 "$(cat %(prefix)s/run/$1.pid)" 2>/dev/null; then echo yes; return; fi
  echo no
}
%(running)s
""" % dict(python=_q(p.python), path=PATH, dockerd=_q(p.dockerd), current=_q(p.current), unit_dir=_q(p.unit_dir),
           prefix=_q(p.prefix), running=running)


def parse_facts(text: str) -> Dict[str, str]:
    facts = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip()
    return facts


def wheelhouse_pythons(names: Iterable[str]) -> Set[str]:
    """The CPython versions ("3.11") a wheelhouse's compiled wheels are for."""
    found = set()
    for name in names:
        for m in re.finditer(r"-cp3(\d+)-", name):
            found.add("3.%s" % m.group(1))
    return found


def service_mode(plan: Plan, facts: Mapping[str, str]) -> str:
    """systemd or background, as plan.services asks and the remote allows."""
    has = facts.get("systemd") == "yes"
    if plan.services == "systemd" or (plan.services == "auto" and has):
        return "systemd"
    if plan.services == "background":
        return "background"
    raise UserError("%s has no systemd; pass --services background to run the roles as detached "
                    "processes (not restarted on failure or reboot), or start them with your own "
                    "service manager" % facts.get("hostname", "the host"))


def problems(plan: Plan, facts: Mapping[str, str], wheel_pythons: Set[str]) -> List[str]:
    """What stops the install on this remote, one line each (empty: go ahead)."""
    out = []
    if facts.get("uid") != "0":
        out.append("the remote commands do not run as root (uid %s); use --ssh-user root or a "
                   "user with passwordless sudo" % facts.get("uid", "?"))
    py = facts.get("python", "")
    if not py:
        out.append("%s does not run there; install Python %d.%d or later (RHEL 8: dnf install "
                   "python3.11) or pass --python" % (plan.python, *MIN_PYTHON))
    else:
        version = tuple(int(x) for x in py.split("."))
        if version < MIN_PYTHON:
            out.append("%s there is Python %s; the agent needs %d.%d or later (RHEL 8: dnf install "
                       "python3.11, then --python python3.11)" % (plan.python, py, *MIN_PYTHON))
        elif wheel_pythons and py not in wheel_pythons:
            out.append("the wheelhouse has no wheels for Python %s (only %s); pass --python with "
                       "one of those or a wheelhouse built for %s"
                       % (py, ", ".join(sorted(wheel_pythons)), py))
        elif facts.get("venv") != "yes":
            out.append("%s there has no venv module; install it (Debian/Ubuntu: apt-get install "
                       "python3-venv)" % plan.python)
    if not facts.get("dockerd"):
        out.append("%s is not installed there; install Docker (docker.io or docker-ce) or "
                   "--set dockerd_path=PATH" % plan.dockerd)
    if plan.services == "systemd" and facts.get("systemd") != "yes":
        out.append("--services systemd, but systemd does not run there")
    return out


def install_script(plan: Plan, version: str, build: str) -> str:
    """Create PREFIX/agent/BUILD (BUILD: version and wheel digest) from the copied wheelhouse,
    offline, and point current at it; an existing complete BUILD is kept."""
    venv = "%s/agent/%s" % (plan.prefix, build)
    return """set -eu
venv=%(venv)s
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  mkdir -p %(prefix)s/agent
  if ! %(python)s -m venv "$venv" >%(prefix)s/install.log 2>&1 || \\
     ! "$venv/bin/pip" install --no-index --find-links %(wheels)s %(req)s >>%(prefix)s/install.log 2>&1; then
    rm -rf "$venv"
    echo "installing the agent failed: $(grep -v '^ *$' %(prefix)s/install.log | tail -n 1) (log: %(prefix)s/install.log)" >&2
    exit 1
  fi
  : > "$venv/.complete"
fi
ln -sfn "$venv" %(current)s.new && mv -T %(current)s.new %(current)s
""" % dict(venv=_q(venv), prefix=_q(plan.prefix), python=_q(plan.python),
           wheels=_q(plan.wheels), req=_q("cdsw_agent==%s" % version), current=_q(plan.current))


_BACKGROUND_FUNCS = """
start_bg() {
  pidf=%(run)s/$1.pid
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    [ "$changed" = 1 ] || return 0
    stop_bg "$1"
  fi
  env -i PATH=%(path)s HOME=/root CDSW_PROPERTIES=%(properties)s CDSW_CONF=%(conf)s \\
    setsid %(cdsw)s role "$1" start </dev/null >>%(log)s/$1.log 2>&1 &
  echo $! > "$pidf"
}
stop_bg() {
  pidf=%(run)s/$1.pid
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  if kill -TERM "$pid" 2>/dev/null; then
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}
"""


def _bg_funcs(plan: Plan) -> str:
    return _BACKGROUND_FUNCS % dict(run=_q(plan.prefix + "/run"), path=PATH,
                                    properties=_q(plan.properties), conf=_q(plan.conf),
                                    cdsw=_q(plan.cdsw()), log=_q(plan.prefix + "/log"))


def configure_and_start_script(plan: Plan, mode: str, properties: str) -> str:
    """Write the settings (0600) and the units, then start both roles; a role already running
    with unchanged settings and units is left alone (re-running `add` is safe)."""
    parts = ["set -eu", "changed=0",
             "mkdir -p %s %s %s" % (_q(plan.prefix + "/etc"), _q(plan.prefix + "/run"),
                                    _q(plan.prefix + "/log")),
             "chmod 700 %s" % _q(plan.prefix + "/etc"),
             "[ -f %s ] || : > %s" % (_q(plan.conf), _q(plan.conf)),
             _heredoc(plan.properties, properties, "600")]
    if mode == "systemd":
        for role in ROLES:
            parts.append(_heredoc("%s/%s" % (plan.unit_dir, plan.unit_name(role)),
                                  systemd_unit(plan, role), "644"))
        units = " ".join(plan.unit_name(r) for r in ROLES)
        parts.append("systemctl daemon-reload")
        parts.append("systemctl enable %s" % units)
        parts.append('if [ "$changed" = 1 ]; then systemctl restart %s; else systemctl start %s; fi'
                     % (units, units))
        parts.append("sleep 2")
        for role in ROLES:
            parts.append("systemctl is-active -q %s || { echo \"%s did not start: $(journalctl -u "
                         "%s -n 1 --no-pager -o cat 2>/dev/null)\" >&2; exit 1; }"
                         % (plan.unit_name(role), plan.unit_name(role), plan.unit_name(role)))
    else:
        parts.append(_bg_funcs(plan))
        for role in ROLES:
            parts.append("start_bg %s" % role)
        parts.append("sleep 2")
        for role in ROLES:
            log = "%s/log/%s.log" % (plan.prefix, role)
            parts.append("kill -0 \"$(cat %s/%s.pid)\" 2>/dev/null || { echo \"the %s role exited "
                         "(log: %s): $(tail -n 1 %s)\" >&2; exit 1; }"
                         % (_q(plan.prefix + "/run"), role, role, log, _q(log)))
    return "\n".join(parts) + "\n"


def stop_script(plan: Plan, purge: bool = False) -> str:
    """Stop the worker (it drains through the master and leaves the swarm), then Docker; remove
    the units and the settings file (the secret); with purge, the whole prefix."""
    units = " ".join(plan.unit_name(r) for r in reversed(ROLES))
    unit_files = " ".join(_q("%s/%s" % (plan.unit_dir, plan.unit_name(r))) for r in ROLES)
    parts = ["set -u", _bg_funcs(plan),
             "if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then",
             "  for u in %s; do systemctl disable --now \"$u\" >/dev/null 2>&1 || true; done" % units,
             "fi"]
    parts += ["stop_bg %s" % role for role in reversed(ROLES)]
    parts.append("rm -f %s %s" % (unit_files, _q(plan.properties)))
    parts.append("if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then "
                 "systemctl daemon-reload; fi")
    if purge:
        parts.append("rm -rf %s" % _q(plan.prefix))
    return "\n".join(parts) + "\n"


def build_id(wheelhouse: Path) -> Tuple[str, str]:
    """(agent version, VERSION-DIGEST) of a wheelhouse: the digest covers every wheel, so a
    rebuilt wheelhouse with the same version number is installed afresh."""
    names = sorted(p.name for p in wheelhouse.glob("*.whl"))
    version = wheel_version(names)
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (wheelhouse / name).read_bytes())
    return version, "%s-%s" % (version, digest.hexdigest()[:12])


def wheel_version(names: Iterable[str]) -> str:
    """The agent version of the wheelhouse's cdsw_agent wheel."""
    versions = sorted({m.group(1) for n in names
                       for m in [re.match(r"cdsw_agent-([^-]+)-", n)] if m})
    if len(versions) != 1:
        raise UserError("the wheelhouse must hold exactly one cdsw_agent wheel (found %d); build "
                        "it with ./build.sh or scripts/packaging/wheelhouse.py" % len(versions))
    return versions[0]
