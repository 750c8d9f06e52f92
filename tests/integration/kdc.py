"""A throwaway MIT Kerberos KDC (Debian's krb5-kdc, kdb5_util, kadmin.local) on loopback, and
a PostgreSQL server that accepts only GSSAPI (Kerberos) logins, for integration tests.

Everything lives in a temporary directory with its own kdc.conf, krb5.conf, database and stash;
the system's /etc/krb5.conf and /etc/krb5kdc are never read or touched (KRB5_CONFIG and
KRB5_KDC_PROFILE point at the private files). Clients are pointed at the KDC over TCP on a free
port. Short ticket lifetimes are the test's choice (kinit -l/-r), the realm allows up to 1 day
and 7 days renewable.

    kdc = start_kdc(Path(tempfile.mkdtemp()))
    kdc.add_principal("alice", "alice-pw")
    ...
    kdc.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from tests import pg

REALM = "CDSW.TEST"
MASTER_PASSWORD = "kdc-master-Secret-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError("%s not found: install krb5-kdc, krb5-admin-server and krb5-user "
                           "(scripts/ci/apt-packages.txt)" % name)
    return found


def krb5_conf_text(realm: str, kdc_port: int) -> str:
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
        kdc = 127.0.0.1:{port}
        admin_server = 127.0.0.1:{port}
    }}
[domain_realm]
    localhost = {realm}
""".format(realm=realm, port=kdc_port)


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
