"""Projects from Git against real servers: the site's host list, loopback and the master's own
networks refused, one answer for every unreachable server, no redirects, and `ssh://` with the
user's own key (a real sshd that accepts only that key; the master's agent and ~/.ssh are there,
authorized too, and must not be used).

The servers run in a network namespace ("another host" on a private bridge, tests/integration/
netns.py): a git daemon, an sshd and two small HTTP servers. The bridge is one of the master's
own networks, so an empty host list refuses it and the tests list its address explicitly.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List

import pytest
from fastapi.testclient import TestClient

from cdsw_agent.projects import git_clone
from cdsw_agent.security import ssh_keys

from ..conftest import Api, build_api, make_settings
from .netns import Host, Lab, available

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin",
           "GIT_CONFIG_NOSYSTEM": "1"}

HTTP_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
addr, port, log, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as f:
            f.write(self.path + "\n")
        if target != "-":
            self.send_response(302)
            self.send_header("Location", target + self.path)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()
ThreadingHTTPServer((addr, port), H).serve_forever()
"""


def wait_port(host: Host, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = host.run([sys.executable, "-c", "import socket; socket.create_connection((%r, %d), 1)"
                      % (host.address, port)])
        if r.returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError("nothing listens on %s:%d" % (host.address, port))


class GitHost:
    """A host with a repository served by git daemon (9418), sshd (22, root with the keys in
    authorized_keys only) and HTTP (8080: redirects to `other`:8080, which logs requests)."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.host = lab.add_host("git")
        self.other = lab.add_host("other")
        self.root = self.host.root
        self.repo = self.root / "repo.git"
        work = self.root / "work"
        work.mkdir()
        (work / "train.py").write_text("print('from git')\n")
        for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "."],
                    ["git", "commit", "-qm", "init"],
                    ["git", "clone", "-q", "--bare", str(work), str(self.repo)]):
            subprocess.run(cmd, cwd=work, check=True, env=GIT_ENV, capture_output=True)
        self.authorized_keys = self.root / "authorized_keys"
        self.authorized_keys.write_text("")
        self._start_git_daemon()
        self._start_sshd()
        self.redirect_log = self.root / "redirect.log"
        self.other_log = self.other.root / "other.log"
        self.redirect_log.touch()
        self.other_log.touch()
        self.host.popen([sys.executable, "-c", HTTP_SERVER, self.host.address, "8080",
                         str(self.redirect_log), "http://%s:8080" % self.other.address],
                        log_name="http.log")
        self.other.popen([sys.executable, "-c", HTTP_SERVER, self.other.address, "8080",
                          str(self.other_log), "-"], log_name="http.log")
        for host, port in ((self.host, 9418), (self.host, 22), (self.host, 8080), (self.other, 8080)):
            wait_port(host, port)
        # a port that drops connection attempts: a server that never answers
        r = subprocess.run(["nsenter", "--net=/var/run/netns/" + self.host.netns, "iptables", "-A",
                            "INPUT", "-p", "tcp", "--dport", "9419", "-j", "DROP"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    def _start_git_daemon(self) -> None:
        self.host.popen(["git", "daemon", "--reuseaddr", "--verbose", "--export-all",
                         "--base-path=%s" % self.root, "--listen=%s" % self.host.address,
                         "--port=9418", str(self.root)], log_name="git-daemon.log")

    def _start_sshd(self) -> None:
        key = self.root / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress %s" % self.host.address, "Port 22", "HostKey %s" % key,
            "PidFile %s" % (self.root / "sshd.pid"),
            "AuthorizedKeysFile %s" % self.authorized_keys, "StrictModes no",
            "PermitRootLogin prohibit-password", "AllowUsers root", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "LogLevel VERBOSE", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.host.popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], log_name="sshd.log")

    @property
    def daemon_log(self) -> str:
        return self.host.log("git-daemon.log")

    @property
    def sshd_log(self) -> str:
        return self.host.log("sshd.log")


@pytest.fixture(scope="module")
def git_host() -> Iterator[GitHost]:
    reason = available()
    if reason:
        pytest.skip(reason)
    with Lab(Path("/var/lib/cdsw-lab") / ("git-" + os.urandom(3).hex())) as lab:
        yield GitHost(lab)


@pytest.fixture
def gapi(tmp_path: Path) -> Iterator[Api]:
    api = build_api(make_settings(tmp_path / "data", allowed_git_schemes=["https", "http", "ssh",
                                                                          "git"]))
    yield api
    api.db.engine.dispose()


def allow(api: Api, hosts: str) -> None:
    admin = api.client_for(api.user(admin=True))
    r = admin.patch("/api/v1/admin/settings", json={"values": {"git_allowed_hosts": hosts}})
    assert r.status_code == 200, r.text


def clone(c: TestClient, url: str, name: str = "p") -> dict:
    r = c.post("/api/v1/projects", json={"name": name + os.urandom(2).hex(), "git_url": url})
    return {"status": r.status_code, **r.json()}


def file_of(c: TestClient, project_id: int, path: str) -> str:
    return c.get("/api/v1/projects/%d/files/content" % project_id, params={"path": path}).json()["content"]


# --- the rules on addresses (no network) ---------------------------------------------------

def test_address_rules() -> None:
    own = {ipaddress.ip_address("10.1.2.3")}
    nets = [ipaddress.ip_network("10.1.2.0/24"), ipaddress.ip_network("203.0.113.0/24")]
    ip = ipaddress.ip_address
    for never in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1", "0.0.0.0",
                  "224.0.0.1", "10.1.2.3"):
        assert git_clone.refusal(ip(never), True, own, nets), never  # even when listed
    for public_only in ("10.1.2.9", "203.0.113.9", "192.168.1.1", "100.64.0.1", "fd00::1"):
        assert git_clone.refusal(ip(public_only), False, own, nets), public_only
        assert git_clone.refusal(ip(public_only), True, own, nets) is None, public_only
    assert git_clone.refusal(ip("140.82.112.3"), False, own, nets) is None
    entries = git_clone.parse_allow_list("github.com, *.corp.example  10.9.0.0/16")
    assert git_clone.host_listed("github.com", entries)
    assert git_clone.host_listed("git.corp.example", entries)
    assert not git_clone.host_listed("corp.example.evil.com", entries)
    assert git_clone.host_listed("10.9.3.4", entries) and not git_clone.host_listed("10.8.0.1", entries)
    assert git_clone.parse("git@github.com:org/repo.git", ["ssh"]).host == "github.com"
    shown = git_clone.parse("https://bob:s3cret@example.com/r.git", ["https"]).display
    assert "s3cret" not in shown and shown == "https://bob:***@example.com/r.git"


def test_the_host_list_is_validated(gapi: Api) -> None:
    admin = gapi.client_for(gapi.user(admin=True))
    r = admin.patch("/api/v1/admin/settings",
                    json={"values": {"git_allowed_hosts": "github.com, bad host!"}})
    assert r.status_code == 422 and "host!" in r.json()["error"]


# --- real servers ---------------------------------------------------------------------------

class Recorder(BaseHTTPRequestHandler):
    hits: List[str] = []

    def do_GET(self) -> None:  # noqa: N802
        Recorder.hits.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_loopback_is_refused_listed_or_not(gapi: Api) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    c = gapi.client_for(gapi.user())
    try:
        for hosts in ("", "127.0.0.1, localhost, 127.0.0.0/8"):
            allow(gapi, hosts)
            for url in ("http://127.0.0.1:%d/r.git" % port, "http://localhost:%d/r.git" % port,
                        "http://[::ffff:127.0.0.1]:%d/r.git" % port):
                r = clone(c, url)
                assert r["status"] == 422, r
                assert r["error"].startswith("could not clone %s: " % url)
                assert "not a host this workbench may clone from" in r["error"]
        assert Recorder.hits == []  # the master never connected
    finally:
        server.shutdown()


def test_the_host_list_decides_and_the_masters_networks_need_listing(gapi: Api,
                                                                      git_host: GitHost) -> None:
    c = gapi.client_for(gapi.user())
    url = "git://%s/repo.git" % git_host.host.address
    before = git_host.daemon_log.count("Connection from")
    allow(gapi, "")  # any public host: the lab's bridge is one of the master's own networks
    r = clone(c, url)
    assert r["status"] == 422 and "not a host this workbench may clone from" in r["error"]
    allow(gapi, "git.example.org")
    r = clone(c, url)
    assert r["status"] == 422 and "git_allowed_hosts" in r["error"]
    assert git_host.daemon_log.count("Connection from") == before  # no connection at all
    allow(gapi, "git.example.org, %s" % git_host.host.address)
    r = clone(c, url)
    assert r["status"] == 201, r
    assert file_of(c, r["id"], "train.py") == "print('from git')\n"


def test_unreachable_servers_get_one_answer(gapi: Api, git_host: GitHost,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(git_clone, "CONNECT_TIMEOUT_SECONDS", 2)
    addr = git_host.host.address
    allow(gapi, "%s, no-such-host.invalid" % addr)
    c = gapi.client_for(gapi.user())
    answers = {}
    for why, url in (("refused", "git://%s:9/repo.git" % addr),
                     ("timed out", "git://%s:9419/repo.git" % addr),
                     ("no DNS name", "git://no-such-host.invalid/repo.git")):
        r = clone(c, url)
        assert r["status"] == 422, (why, r)
        prefix = "could not clone %s: " % url
        assert r["error"].startswith(prefix), r
        answers[why] = r["error"][len(prefix):]
    assert len(set(answers.values())) == 1, answers
    assert "cannot be reached" in answers["refused"]
    for word in ("refused", "timed out", "timeout", "resolve", "port", "9419"):
        assert word not in answers["refused"].lower()


def test_redirects_are_not_followed(gapi: Api, git_host: GitHost) -> None:
    allow(gapi, "%s, %s" % (git_host.host.address, git_host.other.address))
    c = gapi.client_for(gapi.user())
    url = "http://%s:8080/repo.git" % git_host.host.address
    r = clone(c, url)
    assert r["status"] == 422 and r["error"].startswith("could not clone %s: " % url), r
    assert git_host.redirect_log.read_text()  # the first server was asked...
    assert git_host.other_log.read_text() == ""  # ...and the one it pointed to never was


def test_ssh_clones_use_the_users_own_key_only(gapi: Api, git_host: GitHost, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = gapi.user(), gapi.user()
    a, b = gapi.client_for(alice), gapi.client_for(bob)
    key_a = a.get("/api/v1/account/ssh-key").json()
    key_b = b.get("/api/v1/account/ssh-key").json()
    assert key_a["public_key"].startswith("ssh-ed25519 ") and key_a != key_b
    assert a.get("/api/v1/account/ssh-key").json() == key_a  # made once, on first use
    private = ssh_keys.user_dir(Path(gapi.settings.data_dir), alice.id) / ssh_keys.PRIVATE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in a.get("/account").text  # the page shows the public key only
    assert key_a["public_key"] in a.get("/account").text

    # the master's own identity is there and authorized too: an agent and ~/.ssh/id_ed25519
    home = tmp_path / "master-home"
    (home / ".ssh").mkdir(parents=True)
    master_key = home / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(master_key)], check=True)
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        subprocess.run(["ssh-add", str(master_key)], env=dict(os.environ, SSH_AUTH_SOCK=sock),
                       check=True, capture_output=True)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        git_host.authorized_keys.write_text(
            key_a["public_key"] + "\n" + (home / ".ssh" / "id_ed25519.pub").read_text())
        allow(gapi, git_host.host.address)

        for url in ("ssh://root@%s%s" % (git_host.host.address, git_host.repo),
                    "root@%s:%s" % (git_host.host.address, git_host.repo)):
            r = clone(a, url)
            assert r["status"] == 201, r
            assert file_of(a, r["id"], "train.py") == "print('from git')\n"
            r = clone(b, url)  # bob's project, bob's key: not authorized
            assert r["status"] == 422, r
            assert r["error"].startswith("could not clone %s: " % url)
            assert "SSH key" in r["error"]
        # the server saw only the users' keys, never the master's
        fingerprint = subprocess.run(["ssh-keygen", "-lf", str(master_key) + ".pub"],
                                     capture_output=True, text=True).stdout.split()[1]
        assert key_a["fingerprint"] in git_host.sshd_log
        assert key_b["fingerprint"] in git_host.sshd_log
        assert fingerprint not in git_host.sshd_log
        # the host key went to alice's own known_hosts, not the master's
        known = ssh_keys.user_dir(Path(gapi.settings.data_dir), alice.id) / ssh_keys.KNOWN_HOSTS
        assert git_host.host.address in known.read_text()
        assert not (home / ".ssh" / "known_hosts").exists()

        # a new key: the old one (the only one the server knows) stops working
        rotated = a.post("/api/v1/account/ssh-key/rotate").json()
        assert rotated["public_key"] != key_a["public_key"]
        r = clone(a, "ssh://root@%s%s" % (git_host.host.address, git_host.repo))
        assert r["status"] == 422 and "SSH key" in r["error"]
    finally:
        agent.terminate()
        agent.wait(10)
