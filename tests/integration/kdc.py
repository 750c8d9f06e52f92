"""A throwaway MIT Kerberos KDC (Debian's krb5-kdc, kdb5_util, kadmin.local) on loopback, and
two Kerberos-only services for integration tests: a PostgreSQL server that accepts only GSSAPI
logins, and Apache httpd with mod_auth_gssapi (SPNEGO, `curl --negotiate -u :`) that answers the
authenticated principal.

Everything lives in a temporary directory with its own kdc.conf, krb5.conf, database and stash;
the system's /etc/krb5.conf and /etc/krb5kdc are never read or touched (KRB5_CONFIG and
KRB5_KDC_PROFILE point at the private files). Clients are pointed at the KDC over TCP on a free
port. Short ticket lifetimes are the test's choice (kinit -l/-r), the realm allows up to 1 day
and 7 days renewable.

The KDC listens on every address of this machine, so containers in a network namespace lab
(tests/integration/netns.py) reach it at the lab bridge's address: `kdc.client_conf(path, host)`
writes a krb5.conf naming it there. Ports are chosen outside the ranges the engine firewall
drops for container connections (cdsw_agent/roles/engine_firewall.py).

    kdc = start_kdc(Path(tempfile.mkdtemp()))
    kdc.add_principal("alice", "alice-pw")
    ...
    kdc.stop()
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from cdsw_agent.roles.engine_firewall import DRIVER_PORTS, ENGINE_PORTS
from tests import pg

REALM = "CDSW.TEST"
MASTER_PASSWORD = "kdc-master-Secret-1"
# engines' connections to these host ports are dropped (engine ports on any host, Spark driver
# ports of their own node): a service engines must reach listens elsewhere
_BLOCKED = (ENGINE_PORTS, DRIVER_PORTS)


def _free_port() -> int:
    """A free TCP port outside the ranges the engine firewall blocks."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        if not any(low <= port <= high for low, high in _BLOCKED):
            return port
    raise RuntimeError("no free port outside %s" % (_BLOCKED,))


def _which(name: str) -> str:
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError("%s not found: install krb5-kdc, krb5-admin-server and krb5-user "
                           "(scripts/ci/apt-packages.txt)" % name)
    return found


def krb5_conf_text(realm: str, kdc_port: int, kdc_host: str = "127.0.0.1") -> str:
    """A client krb5.conf: the KDC at kdc_host over TCP; services on localhost and on kdc_host
    (an address, as in http://10.1.2.3:8080/) belong to the realm."""
    return """[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    ignore_acceptor_hostname = true
[realms]
    {realm} = {{
        kdc = {host}:{port}
        admin_server = {host}:{port}
    }}
[domain_realm]
    localhost = {realm}
    {host} = {realm}
""".format(realm=realm, port=kdc_port, host=kdc_host)


@dataclass
class Kdc:
    root: Path
    realm: str
    port: int
    proc: subprocess.Popen
    env: Dict[str, str] = field(default_factory=dict)

    @property
    def krb5_conf(self) -> Path:
        return self.root / "krb5.conf"

    def kadmin(self, query: str) -> str:
        done = subprocess.run([_which("kadmin.local"), "-r", self.realm, "-q", query],
                              env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0 or "error" in done.stderr.lower():
            raise RuntimeError("kadmin.local %r: %s %s" % (query, done.stdout, done.stderr))
        return done.stdout

    def add_principal(self, name: str, password: Optional[str] = None) -> str:
        """name@REALM with that password (else a random key); renewable for 7 days."""
        key = "-pw %s" % password if password else "-randkey"
        self.kadmin("addprinc %s -maxrenewlife 7d %s" % (key, name))
        return "%s@%s" % (name, self.realm)

    def keytab(self, name: str, path: Path) -> Path:
        """A keytab for name (its key is changed: -norandkey needs kadmind's lock-free mode)."""
        self.kadmin("ktadd -k %s %s" % (path, name))
        return path

    def client_conf(self, path: Path, host: str) -> Path:
        """A krb5.conf naming this KDC at host, another address of this machine (it listens
        on all of them): the one containers in a lab reach the test host at."""
        path.write_text(krb5_conf_text(self.realm, self.port, host))
        return path

    def down_conf(self, path: Path) -> Path:
        """A krb5.conf for the same realm whose KDC does not answer (a closed port)."""
        path.write_text(krb5_conf_text(self.realm, _free_port()))
        return path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def start_kdc(root: Path, realm: str = REALM) -> Kdc:
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (root / "krb5.conf").write_text(krb5_conf_text(realm, port))
    (root / "kadm5.acl").write_text("*/admin@%s *\n" % realm)
    (root / "kdc.conf").write_text("""[kdcdefaults]
    kdc_ports = {port}
    kdc_tcp_ports = {port}
[realms]
    {realm} = {{
        database_name = {root}/principal
        key_stash_file = {root}/stash
        acl_file = {root}/kadm5.acl
        max_life = 1d
        max_renewable_life = 7d
        kdc_ports = {port}
        kdc_tcp_ports = {port}
    }}
[logging]
    kdc = FILE:{root}/kdc.log
""".format(realm=realm, port=port, root=root))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KRB5_CONFIG": str(root / "krb5.conf"),
           "KRB5_KDC_PROFILE": str(root / "kdc.conf"), "LC_ALL": "C"}
    subprocess.run([_which("kdb5_util"), "create", "-s", "-r", realm, "-P", MASTER_PASSWORD],
                   env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen([_which("krb5kdc"), "-n", "-r", realm], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(root / "krb5kdc.err", "wb"))
    kdc = Kdc(root, realm, port, proc, env)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("krb5kdc exited: %s" % (root / "krb5kdc.err").read_text()[-2000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        kdc.stop()
        raise RuntimeError("krb5kdc did not listen on 127.0.0.1:%d" % port)
    kdc.kadmin("modprinc -maxrenewlife 7d krbtgt/%s@%s" % (realm, realm))
    return kdc


@dataclass
class GssPostgres:
    """A PostgreSQL that lets roles in only with a Kerberos ticket (pg_hba `gss`)."""
    server: pg.PostgresServer
    realm: str

    @property
    def port(self) -> int:
        return self.server.port

    def add_role(self, name: str) -> None:
        self.server.psql('CREATE ROLE "%s" LOGIN' % name)

    def stop(self) -> None:
        self.server.stop()


WHOAMI_SQL = "SELECT principal FROM pg_stat_gssapi WHERE pid = pg_backend_pid()"


def start_gss_postgres(kdc: Kdc) -> GssPostgres:
    """postgres/localhost@REALM's keytab in the server's folder, krb_server_keyfile pointing at
    it, and pg_hba accepting TCP logins from loopback with gss only."""
    server = pg.start()
    root = Path(server.root)
    kdc.add_principal("postgres/localhost")
    keytab = kdc.keytab("postgres/localhost", root / "postgres.keytab")
    if server.run_as:
        shutil.chown(keytab, "postgres", "postgres")
    data = root / "data"
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all all 127.0.0.1/32 gss include_realm=0 krb_realm=%s\n"
        "host all all ::1/128 gss include_realm=0 krb_realm=%s\n" % (kdc.realm, kdc.realm))
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write("krb_server_keyfile = 'FILE:%s'\n" % keytab)
    server.restart()
    return GssPostgres(server, kdc.realm)


def psql_command(port: int, user: str) -> List[str]:
    """What an engine runs to ask the server whose ticket it logged in with."""
    return ["psql", "host=localhost port=%d dbname=postgres user=%s" % (port, user), "-Atc",
            WHOAMI_SQL]


# --- Apache httpd with mod_auth_gssapi: a web service (as WebHDFS, YARN, Livy) behind SPNEGO

HTTPD = "/usr/sbin/apache2"  # Debian's apache2-bin: no init script, nothing starts system-wide
HTTPD_MODULES = "/usr/lib/apache2/modules"
HTTPD_USER = "www-data"  # httpd refuses to serve as root; its children switch to this user
WHOAMI_LUA = """function handle(r)
    r.content_type = "text/plain"
    r:puts("principal=" .. (r.user or "") .. "\\n")
    return apache2.OK
end
"""


@dataclass
class GssHttpd:
    """httpd answering `principal=<who>@REALM` to a request authenticated with Kerberos
    (SPNEGO), 401 to any other."""
    root: Path
    host: str
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return "http://%s:%d/" % (self.host, self.port)

    def log(self) -> str:
        return "\n".join((self.root / name).read_text(errors="replace")[-3000:]
                         for name in ("error.log", "httpd.out") if (self.root / name).exists())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the parent stops its children and exits
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


def start_gss_httpd(kdc: Kdc, host: str = "127.0.0.1") -> GssHttpd:
    """httpd in the foreground on host:<free port>, everything (config, keytab of
    HTTP/<host>@REALM, logs, pid file) in its own temporary folder, which its worker user
    can read (pytest's own folders are private to root)."""
    for path in (HTTPD, os.path.join(HTTPD_MODULES, "mod_auth_gssapi.so")):
        if not os.path.exists(path):
            raise RuntimeError("%s not found: install apache2-bin and libapache2-mod-auth-gssapi "
                               "(scripts/ci/apt-packages.txt)" % path)
    root = Path(tempfile.mkdtemp(prefix="cdsw-httpd-"))
    port = _free_port()
    name = "HTTP/%s" % host
    kdc.add_principal(name)
    kdc.keytab(name, root / "http.keytab")
    (root / "whoami.lua").write_text(WHOAMI_LUA)
    # its own copy: the worker user cannot read the KDC's private folder
    shutil.copyfile(kdc.krb5_conf, root / "krb5.conf")
    modules = ["mpm_event", "authn_core", "authz_core", "authz_user", "auth_gssapi", "lua"]
    user = ""
    if os.geteuid() == 0:
        user = "User %s\nGroup %s\n" % (HTTPD_USER, HTTPD_USER)
        entry = pwd.getpwnam(HTTPD_USER)
        for path in [root] + list(root.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    (root / "httpd.conf").write_text("""ServerRoot "{root}"
ServerName {host}
Listen {host}:{port}
PidFile "{root}/httpd.pid"
DefaultRuntimeDir "{root}"
{user}{modules}
StartServers 1
ServerLimit 1
ThreadsPerChild 4
MaxRequestWorkers 4
ErrorLog "{root}/error.log"
LogLevel warn auth_gssapi:info
LogFormat "%u \\"%r\\" %>s" whoami
CustomLog "{root}/access.log" whoami
<Location "/">
    AuthType GSSAPI
    AuthName "cdsw test"
    GssapiCredStore keytab:{root}/http.keytab
    GssapiAllowedMech krb5
    Require valid-user
</Location>
LuaMapHandler "^/" "{root}/whoami.lua"
""".format(root=root, host=host, port=port, user=user, modules="\n".join(
        "LoadModule %s_module %s/mod_%s.so" % (m, HTTPD_MODULES, m) for m in modules)))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
           "KRB5_CONFIG": str(root / "krb5.conf"), "KRB5RCACHEDIR": str(root)}
    out = open(root / "httpd.out", "wb")
    proc = subprocess.Popen([HTTPD, "-f", str(root / "httpd.conf"), "-DFOREGROUND"], env=env,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    httpd = GssHttpd(root, host, port, proc)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            log = httpd.log()
            httpd.stop()
            raise RuntimeError("httpd exited %s: %s" % (proc.returncode, log))
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            time.sleep(0.1)
            continue
        _refuses_without_ticket(httpd)
        return httpd
    log = httpd.log()
    httpd.stop()
    raise RuntimeError("httpd did not listen on %s:%d: %s" % (host, port, log))


def _refuses_without_ticket(httpd: GssHttpd) -> None:
    """The service is really protected: a request without Kerberos gets 401 and a Negotiate
    challenge, so a `principal=` answer can only come from an authenticated request."""
    import urllib.error
    import urllib.request

    try:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(httpd.url, timeout=10) as r:
            answer = "%s %r" % (r.status, r.read()[:200])
    except urllib.error.HTTPError as e:
        if e.code == 401 and e.headers.get("WWW-Authenticate") == "Negotiate":
            return
        answer = "%s %s" % (e.code, e.headers.get("WWW-Authenticate"))
    log = httpd.log()
    httpd.stop()
    raise RuntimeError("httpd answered a request without a ticket with %s: %s" % (answer, log))


def curl_command(url: str) -> List[str]:
    """What an engine runs to reach a Kerberos-protected web service with its ticket (SPNEGO),
    as users reach WebHDFS, YARN or Livy; prints the body and then the HTTP status."""
    return ["curl", "-sS", "--negotiate", "-u", ":", "-w", "status=%{http_code}\\n", url]
