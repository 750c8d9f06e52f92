"""A throwaway OpenLDAP slapd for integration tests.

Runs the distribution's slapd binary in the foreground on 127.0.0.1 with a private
slapd.conf, an mdb database and a self-signed CA in a temporary directory; the system
slapd service and /etc/ldap/slapd.d are never touched. Usable outside pytest:

    server = start_slapd(Path(tempfile.mkdtemp()))
    ...
    server.stop()
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

BASE_DN = "dc=cdsw,dc=test"
ROOT_DN = "cn=admin," + BASE_DN
ROOT_PASSWORD = "root-secret-0"
PEOPLE_DN = "ou=people," + BASE_DN
GROUPS_DN = "ou=groups," + BASE_DN
SERVICE_DN = "cn=cdsw-svc,ou=services," + BASE_DN
SERVICE_PASSWORD = "svc-secret-1"
ADMIN_GROUP_DN = "cn=cdsw-admins," + GROUPS_DN  # groupOfNames: alice
UNIQUE_GROUP_DN = "cn=unique-admins," + GROUPS_DN  # groupOfUniqueNames: bob, dan
POSIX_GROUP_DN = "cn=posix-admins," + GROUPS_DN  # posixGroup: carol

# Candidate locations (Debian/Ubuntu first, then RHEL-like and source builds).
_SLAPD_PATHS = ("/usr/sbin/slapd", "/usr/libexec/slapd", "/usr/local/libexec/slapd")
_MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap", "/usr/local/libexec/openldap")
_SCHEMA_DIRS = ("/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema")
_SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


@dataclass(frozen=True)
class User:
    uid: str  # as stored in the directory
    password: str
    dn: str
    cn: str
    mail: Optional[str]


USERS: Dict[str, User] = {u.uid.lower(): u for u in [
    User("alice", "alice-pw-1", "uid=alice," + PEOPLE_DN, "Alice Liddell", "alice@cdsw.test"),
    User("bob", "bob-pw-2", "uid=bob," + PEOPLE_DN, "Bob Builder", "bob@cdsw.test"),
    # mixed-case uid, no mail attribute
    User("Carol", "carol-pw-3", "uid=Carol," + PEOPLE_DN, "Carol Danvers", None),
    # RFC 4514/4515 metacharacters in the DN and a non-ASCII password
    User("dan", "d\u00e4n-p\u00e4ss\u00fc", "cn=Dan (Ops) Smith\\, Jr," + PEOPLE_DN, "Dan (Ops) Smith, Jr",
         "dan@cdsw.test"),
]}


class SlapdUnavailable(Exception):
    """slapd (or its modules/schemas) is not installed on this machine."""


class SlapdError(Exception):
    """slapd is installed but could not be started."""


@dataclass
class Installation:
    slapd: str
    slapadd: str
    module_dir: str
    schema_dir: str


@dataclass
class SlapdServer:
    workdir: Path
    port: int
    ldaps_port: int
    ca_cert: Optional[str]  # None when no TLS tooling was available
    process: Optional["subprocess.Popen[bytes]"] = field(default=None, repr=False)
    host: str = "127.0.0.1"
    base_dn: str = BASE_DN
    people_dn: str = PEOPLE_DN
    root_dn: str = ROOT_DN
    root_password: str = ROOT_PASSWORD
    bind_dn: str = SERVICE_DN
    bind_password: str = SERVICE_PASSWORD
    admin_group_dn: str = ADMIN_GROUP_DN
    users: Dict[str, User] = field(default_factory=lambda: dict(USERS))

    @property
    def url(self) -> str:
        return "ldap://%s:%d" % (self.host, self.port)

    @property
    def ldaps_url(self) -> str:
        return "ldaps://%s:%d" % (self.host, self.ldaps_port)

    @property
    def tls(self) -> bool:
        return self.ca_cert is not None

    @property
    def log_path(self) -> Path:
        return self.workdir / "slapd.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def find_installation() -> Installation:
    """Locate slapd, slapadd, back_mdb and the schemas, or raise SlapdUnavailable."""
    slapd = shutil.which("slapd") or next((p for p in _SLAPD_PATHS if os.access(p, os.X_OK)), None)
    if not slapd:
        raise SlapdUnavailable("slapd is not installed (Debian/Ubuntu: apt-get install slapd ldap-utils)")
    slapadd = shutil.which("slapadd") or os.path.join(os.path.dirname(slapd), "slapadd")
    if not os.access(slapadd, os.X_OK):
        raise SlapdUnavailable("slapadd not found next to %s (package slapd)" % slapd)
    module_dir = next((d for d in _MODULE_DIRS if any(Path(d).glob("back_mdb*"))), None)
    if not module_dir:
        raise SlapdUnavailable("back_mdb module not found in %s (package slapd)" % ", ".join(_MODULE_DIRS))
    schema_dir = next((d for d in _SCHEMA_DIRS
                       if all(Path(d, s + ".schema").is_file() for s in _SCHEMAS)), None)
    if not schema_dir:
        raise SlapdUnavailable("LDAP schemas %s not found in %s (package slapd)"
                               % (", ".join(_SCHEMAS), ", ".join(_SCHEMA_DIRS)))
    return Installation(slapd, slapadd, module_dir, schema_dir)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssha(password: str) -> str:
    """{SSHA} userPassword value, as slappasswd makes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


# --- TLS material -------------------------------------------------------------------------

def make_tls_files(directory: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> Optional[Dict[str, str]]:
    """Self-signed CA plus a server certificate for `hosts`; paths keyed ca/cert/key.

    Uses the `cryptography` package when importable, else the openssl CLI; None if neither.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = {k: str(directory / n) for k, n in (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"))}
    try:
        _tls_with_cryptography(paths, hosts)
        return paths
    except ImportError:
        pass
    if shutil.which("openssl"):
        _tls_with_openssl(directory, paths, hosts)
        return paths
    return None


def _tls_with_cryptography(paths: Dict[str, str], hosts: Sequence[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cdsw test LDAP CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(not_before).not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: List[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    Path(paths["ca"]).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(paths["cert"]).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(paths["key"]).write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    os.chmod(paths["key"], 0o600)


def _tls_with_openssl(directory: Path, paths: Dict[str, str], hosts: Sequence[str]) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ca_key = str(directory / "ca.key")
    csr = str(directory / "server.csr")
    ext = directory / "server.ext"
    sans = ",".join(("IP:" if _is_ip(h) else "DNS:") + h for h in hosts)
    ext.write_text("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
                   "subjectAltName=%s\n" % sans)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", ca_key, "-out", paths["ca"], "-days", "30", "-subj", "/CN=cdsw test LDAP CA",
        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", paths["key"], "-out", csr, "-subj", "/CN=" + hosts[0])
    run("x509", "-req", "-in", csr, "-CA", paths["ca"], "-CAkey", ca_key, "-CAcreateserial",
        "-out", paths["cert"], "-days", "30", "-sha256", "-extfile", str(ext))
    os.chmod(paths["key"], 0o600)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# --- configuration and data ---------------------------------------------------------------

def _conf(inst: Installation, workdir: Path, tls: Optional[Dict[str, str]]) -> str:
    lines = ['include "%s/%s.schema"' % (inst.schema_dir, s) for s in _SCHEMAS]
    lines += [
        'pidfile "%s"' % (workdir / "slapd.pid"),
        'argsfile "%s"' % (workdir / "slapd.args"),
        'modulepath "%s"' % inst.module_dir,
        "moduleload back_mdb",
        # Accept DN-with-empty-password ("unauthenticated") binds, as Active Directory does,
        # so the client-side refusal of empty passwords is what the tests exercise.
        "allow bind_anon_cred",
        "sizelimit 500",
    ]
    if tls:
        lines += ['TLSCACertificateFile "%s"' % tls["ca"],
                  'TLSCertificateFile "%s"' % tls["cert"],
                  'TLSCertificateKeyFile "%s"' % tls["key"]]
    lines += [
        "database mdb",
        'suffix "%s"' % BASE_DN,
        'rootdn "%s"' % ROOT_DN,
        "rootpw %s" % ROOT_PASSWORD,
        'directory "%s"' % (workdir / "db"),
        "maxsize 16777216",
        # Passwords: usable for binds, readable by nobody; everything else is readable.
        "access to attrs=userPassword",
        "  by self write",
        "  by anonymous auth",
        "  by * none",
        "access to *",
        '  by dn.exact="%s" read' % SERVICE_DN,
        "  by users read",
        "  by anonymous read",
    ]
    return "\n".join(lines) + "\n"


def _ldif() -> str:
    def entry(dn: str, *attrs: str) -> str:
        return "dn: %s\n%s\n" % (dn, "\n".join(attrs))

    def b64(name: str, value: str) -> str:  # LDIF needs base64 for non-ASCII values
        return "%s:: %s" % (name, base64.b64encode(value.encode("utf-8")).decode("ascii"))

    entries = [
        entry(BASE_DN, "objectClass: dcObject", "objectClass: organization", "dc: cdsw", "o: cdsw test"),
        entry(PEOPLE_DN, "objectClass: organizationalUnit", "ou: people"),
        entry(GROUPS_DN, "objectClass: organizationalUnit", "ou: groups"),
        entry("ou=services," + BASE_DN, "objectClass: organizationalUnit", "ou: services"),
        entry(SERVICE_DN, "objectClass: organizationalRole", "objectClass: simpleSecurityObject",
              "cn: cdsw-svc", "userPassword: " + ssha(SERVICE_PASSWORD)),
    ]
    for u in USERS.values():
        attrs = ["objectClass: inetOrgPerson", "uid: " + u.uid, "cn: " + u.cn,
                 "sn: " + u.cn.split()[-1], "userPassword: " + ssha(u.password)]
        if u.mail:
            attrs.append("mail: " + u.mail)
        entries.append(entry(u.dn, *attrs))
    entries += [
        entry(ADMIN_GROUP_DN, "objectClass: groupOfNames", "cn: cdsw-admins",
              "member: " + USERS["alice"].dn),
        entry(UNIQUE_GROUP_DN, "objectClass: groupOfUniqueNames", "cn: unique-admins",
              "uniqueMember: " + USERS["bob"].dn, "uniqueMember: " + USERS["dan"].dn),
        entry(POSIX_GROUP_DN, "objectClass: posixGroup", "cn: posix-admins", "gidNumber: 5000",
              "memberUid: Carol"),
        # two entries share cn "Twin", for the more-than-one-match test
        entry("uid=twin1," + PEOPLE_DN, "objectClass: inetOrgPerson", "uid: twin1", "cn: Twin",
              "sn: Twin", "userPassword: " + ssha("twin-pw")),
        entry("uid=twin2," + PEOPLE_DN, "objectClass: inetOrgPerson", "uid: twin2", "cn: Twin",
              "sn: Twin", "userPassword: " + ssha("twin-pw")),
        entry("uid=nonascii," + PEOPLE_DN, "objectClass: inetOrgPerson", "uid: nonascii",
              b64("cn", "J\u00fcrgen M\u00fcller"), "sn: Mueller", "userPassword: " + ssha("nonascii-pw")),
    ]
    return "\n".join(entries)


# --- lifecycle ----------------------------------------------------------------------------

def start_slapd(workdir: Path, timeout: float = 20.0,
                tls_hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> SlapdServer:
    """Configure, load and start slapd under `workdir`; returns once its ports accept.

    tls_hosts: names the server certificate is issued for.
    """
    inst = find_installation()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "db").mkdir(exist_ok=True)
    tls = make_tls_files(workdir / "tls", tls_hosts)
    conf = workdir / "slapd.conf"
    conf.write_text(_conf(inst, workdir, tls))
    data = workdir / "data.ldif"
    data.write_text(_ldif(), encoding="utf-8")

    load = subprocess.run([inst.slapadd, "-q", "-f", str(conf), "-l", str(data)],
                          capture_output=True, text=True, timeout=60)
    if load.returncode != 0:
        raise SlapdError("slapadd failed (%d): %s" % (load.returncode, (load.stderr or load.stdout)[-2000:]))

    server = SlapdServer(workdir=workdir, port=free_port(), ldaps_port=free_port(),
                         ca_cert=tls["ca"] if tls else None)
    urls = [server.url + "/"] + ([server.ldaps_url + "/"] if tls else [])
    with open(server.log_path, "wb") as log:
        # -d keeps slapd in the foreground so the Popen handle owns it; level 0 logs only errors.
        server.process = subprocess.Popen([inst.slapd, "-f", str(conf), "-h", " ".join(urls), "-d", "0"],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    ports = [server.port] + ([server.ldaps_port] if tls else [])
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise SlapdError("slapd exited with %s:\n%s" % (server.process.returncode, server.log_tail()))
        if all(_accepts(server.host, p) for p in ports):
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise SlapdError("slapd did not listen on %s within %.0fs:\n%s"
                             % (ports, timeout, server.log_tail()))
        time.sleep(0.05)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
