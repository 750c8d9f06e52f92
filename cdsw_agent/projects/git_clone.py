"""Cloning a project from a Git URL without lending the master's network position or identity.

The master clones on behalf of a user, from inside the cluster network, so a URL must not turn it
into a way to reach what the user cannot (its own services, the engines, a cloud metadata
endpoint) nor into a port scanner, and an `ssh://` clone must not use the master's SSH identity.

Which hosts (the site setting git_allowed_hosts, a list of names, `*.suffix` patterns, IP addresses
or networks):
  - empty list: any public host. The name is resolved and every address it resolves to must be
    a global unicast address outside the networks of the master's own interfaces;
  - otherwise only the hosts listed, which may then be on private networks (an internal GitLab);
  - never, listed or not: loopback, link-local (cloud metadata), multicast or unspecified
    addresses, and the master's own addresses.
git then connects to the address that was checked (pinned: curl's resolve list for HTTP(S),
ssh's HostName for SSH, the address itself for git://), so DNS cannot answer differently the
second time, and HTTP redirects are not followed.

What the user is told: "could not clone URL: ..." with one message for every way of not reaching
the server (DNS failure, refused, timed out, unreachable), so the answer says nothing about which
hosts and ports exist; the master's log has the details.

Whose identity: git runs with an empty environment and HOME (no ~/.gitconfig, credential helpers,
~/.ssh, SSH_AUTH_SOCK or proxy of the master), and `ssh://` URLs authenticate with the user's own
key (security/ssh_keys.py) and the user's own known_hosts file.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Set, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

from ..security.ssh_keys import UserKey, ssh_command
from .storage import FileError

log = logging.getLogger(__name__)

IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Net = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

CLONE_TIMEOUT_SECONDS = 600
CONNECT_TIMEOUT_SECONDS = 15
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])"
                       r":(?P<path>[^/].*|/.*)$")
_HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")

UNREACHABLE = ("the Git server cannot be reached; check the URL, and that the server answers "
               "from the workbench's network")
NOT_ALLOWED = ("%s is not a host this workbench may clone from; ask an administrator (site "
               "setting git_allowed_hosts)")
NO_ACCESS = ("the server refused: the repository does not exist or needs credentials; check the "
             "URL and your access")
NO_ACCESS_SSH = ("the server refused: the repository does not exist or your SSH key is not "
                 "accepted; add your public key (account page, or GET /api/v1/account/ssh-key) "
                 "to the Git server")


@dataclass(frozen=True)
class Source:
    url: str         # as given
    scheme: str      # https | http | ssh | git | file | ...
    host: str        # lower case, IPv6 without brackets; "" for file
    port: int
    display: str     # the URL with any password replaced by ***


def git_scheme(url: str) -> str:
    if _SCP_LIKE.match(url):
        return "ssh"
    return urlsplit(url).scheme.lower()


def _redact(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = "%s:***@%s" % (parts.username or "", parts.netloc.rsplit("@", 1)[1])
    return urlunsplit(parts._replace(netloc=netloc))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = (parts.username + "@") if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + parts.netloc.rsplit("@", 1)[1]))


def parse(url: str, allowed_schemes: Sequence[str]) -> Source:
    """The URL's scheme, host and port; FileError for a URL git must not be given."""
    shown = _redact(url)
    if url.startswith("-") or any(c in url for c in "\n\r\x00"):
        raise FileError(422, "could not clone %r: git_url is not a valid URL" % shown[:200])
    scheme = git_scheme(url)
    if scheme not in allowed_schemes:
        raise FileError(422, "could not clone %s: URLs with scheme %r are not allowed here "
                        "(allowed: %s)" % (shown, scheme or "none", ", ".join(allowed_schemes)))
    if scheme == "file":
        return Source(url, scheme, "", 0, shown)
    m = _SCP_LIKE.match(url)
    try:
        if m:
            host, port = m.group("host").strip("[]"), 22
        else:
            parts = urlsplit(url)
            host, port = parts.hostname or "", parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        raise FileError(422, "could not clone %s: the URL's host or port is not valid" % shown)
    if not host or not port:
        raise FileError(422, "could not clone %s: the URL names no host" % shown)
    return Source(url, scheme, host.lower().rstrip("."), port, shown)


# --- the site's list of hosts --------------------------------------------------------------

def parse_allow_list(text: str) -> List[str]:
    return [e.strip().lower().rstrip(".") for e in re.split(r"[\s,]+", text or "") if e.strip()]


def allow_list_problem(text: object) -> Optional[str]:
    """None when every entry is a host name, *.suffix, IP address or network."""
    if not isinstance(text, str):
        return "expected a string"
    for entry in parse_allow_list(text):
        try:
            ipaddress.ip_network(entry, strict=False)
            continue
        except ValueError:
            pass
        if not _HOST_PATTERN.match(entry):
            return ("%r is not a host name, *.domain pattern, IP address or network "
                    "(separate entries with commas or spaces)" % entry)
    return None


def host_listed(host: str, entries: Iterable[str]) -> bool:
    try:
        literal: Optional[IP] = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    for entry in entries:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and literal is None:
                return True
        elif entry == host:
            return True
        elif literal is not None:
            try:
                if literal in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
    return False


# --- addresses -----------------------------------------------------------------------------

def master_addresses(extra_hosts: Sequence[str] = ()) -> Tuple[Set[IP], List[Net]]:
    """The master's own addresses and the networks of its interfaces (`ip -j address`), plus
    what its configured names (domain, master_host) resolve to."""
    addrs: Set[IP] = set()
    nets: List[Net] = []
    try:
        out = subprocess.run(["ip", "-j", "address", "show"], capture_output=True, text=True,
                             timeout=10).stdout
        for link in json.loads(out or "[]"):
            for info in link.get("addr_info", []):
                iface = ipaddress.ip_interface("%s/%s" % (info["local"], info["prefixlen"]))
                addrs.add(_plain(iface.ip))
                nets.append(iface.network)
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        log.warning("cannot list the master's addresses (ip -j address): %s", e)
    for host in extra_hosts:
        for ip in _resolve(host, 0):
            addrs.add(ip)
    return addrs, nets


def _plain(ip: IP) -> IP:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _resolve(host: str, port: int) -> List[IP]:
    try:
        infos = socket.getaddrinfo(host, port or None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    out: List[IP] = []
    for info in infos:
        ip = _plain(ipaddress.ip_address(info[4][0].split("%", 1)[0]))
        if ip not in out:
            out.append(ip)
    return out


def refusal(ip: IP, listed: bool, own: Set[IP], own_nets: Sequence[Net]) -> Optional[str]:
    """Why the master must not connect to ip, or None."""
    ip = _plain(ip)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "not a unicast address"
    if ip in own:
        return "one of the master's own addresses"
    if listed:
        return None
    if any(ip in net for net in own_nets if net.version == ip.version):
        return "on a network the master is attached to"
    if not ip.is_global:
        return "not a public address"
    return None


def _connect(addresses: Sequence[IP], port: int) -> Optional[IP]:
    """The first address that accepts a TCP connection within the timeout."""
    for ip in addresses:
        try:
            with socket.create_connection((str(ip), port), timeout=CONNECT_TIMEOUT_SECONDS):
                return ip
        except OSError as e:
            log.info("git clone: %s port %d: %s", ip, port, e)
    return None


# --- clone -------------------------------------------------------------------------------

def _classify(source: Source, stderr: str) -> str:
    text = stderr.lower()
    if "host key verification failed" in text or "remote host identification has changed" in text:
        return ("the server's SSH host key differs from the one you accepted before (a changed "
                "server, or someone in between); ask an administrator")
    if any(s in text for s in ("permission denied", "repository not found", "not found",
                               "returned error: 401", "returned error: 403",
                               "authentication failed", "could not read username",
                               "does not appear to be a git repository", "access denied",
                               "no such file or directory", "access rights")):
        return NO_ACCESS_SSH if source.scheme == "ssh" else NO_ACCESS
    if "redirect" in text or re.search(r"returned error: 30[12378]", text):
        return ("the server answered with a redirect, which is not followed; use the "
                "repository's final URL")
    if any(s in text for s in ("could not resolve", "connection refused", "timed out",
                               "no route to host", "network is unreachable", "failed to connect",
                               "connection reset", "early eof", "ssl", "tls",
                               "connection closed", "could not read from remote")):
        return UNREACHABLE
    return "git failed (the master's log has the details)"


def clone(dest: Path, url: str, *, allowed_schemes: Sequence[str], allowed_hosts: str = "",
          ssh_key: Optional[UserKey] = None, master_hosts: Sequence[str] = ()) -> None:
    """Clone url into dest (an empty folder) under the rules above; FileError when not."""
    source = parse(url, allowed_schemes)
    git = shutil.which("git")
    if git is None:
        raise FileError(503, "git is not installed on the master; install it (apt-get install git)")
    fail = "could not clone %s: " % source.display
    config: List[str] = ["-c", "http.followRedirects=false", "-c", "transfer.fsckObjects=true"]
    clone_url = url
    ssh_cmd = "false"  # no ssh for a non-ssh URL (a submodule, a redirect)
    if source.scheme != "file":
        entries = parse_allow_list(allowed_hosts)
        listed = host_listed(source.host, entries)
        if entries and not listed:
            log.warning("git clone of %s refused: host %s is not in git_allowed_hosts",
                        source.display, source.host)
            raise FileError(422, fail + NOT_ALLOWED % source.host)
        addresses = _resolve(source.host, source.port)
        own, own_nets = master_addresses(master_hosts)
        for ip in addresses:
            why = refusal(ip, listed, own, own_nets)
            if why is not None:
                log.warning("git clone of %s refused: %s resolves to %s, %s", source.display,
                            source.host, ip, why)
                raise FileError(422, fail + NOT_ALLOWED % source.host)
        pinned = _connect(addresses, source.port) if addresses else None
        if pinned is None:
            log.warning("git clone of %s: %s", source.display,
                        "cannot resolve %s" % source.host if not addresses
                        else "no address of %s accepts port %d" % (source.host, source.port))
            raise FileError(422, fail + UNREACHABLE)
        shown_ip = "[%s]" % pinned if pinned.version == 6 else str(pinned)
        if source.scheme in ("http", "https"):
            config += ["-c", "http.curloptResolve=%s:%d:%s" % (source.host, source.port, shown_ip)]
        elif source.scheme == "ssh":
            if ssh_key is None:
                raise FileError(422, fail + "an ssh:// clone needs your SSH key; sign in as a user")
            ssh_cmd = ssh_command(ssh_key, pin_address=str(pinned), host_alias=source.host)
        elif source.scheme == "git":
            parts = urlsplit(url)
            clone_url = urlunsplit(parts._replace(netloc="%s:%d" % (shown_ip, source.port)))
    home = tempfile.mkdtemp(prefix="cdsw-git-home-")
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": home,
           "LANG": "C", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false",
           "SSH_ASKPASS": "/bin/false", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_ALLOW_PROTOCOL": ":".join(allowed_schemes), "GIT_SSH_COMMAND": ssh_cmd,
           "GIT_SSH_VARIANT": "ssh"}
    try:
        proc = subprocess.run([git] + config + ["clone", "--quiet", "--depth", "1", "--", clone_url,
                                                str(dest)],
                              env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=CLONE_TIMEOUT_SECONDS)
        if proc.returncode == 0:
            # the clone's origin is the URL as given, without a password others could read
            subprocess.run([git, "remote", "set-url", "origin", _without_password(url)],
                           cwd=str(dest), env=env, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        log.warning("git clone of %s took longer than %d s", source.display, CLONE_TIMEOUT_SECONDS)
        raise FileError(504, fail + "it took longer than %d s" % CLONE_TIMEOUT_SECONDS)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        detail = proc.stderr.replace(url, source.display).strip()
        password = urlsplit(url).password if source.scheme != "ssh" else None
        if password:
            detail = detail.replace(password, "***")
        log.warning("git clone of %s failed (exit %d): %s", source.display, proc.returncode,
                    detail[-2000:])
        raise FileError(422, fail + _classify(source, proc.stderr))
