"""Commands on a remote host through the system OpenSSH client (`ssh`, `ssh-keyscan`,
`ssh-keygen`; Debian openssh-client, RHEL openssh-clients).

Host keys: the remote's key must already be in known_hosts (StrictHostKeyChecking=yes, never
added silently). `accept_host_key` is the explicit way in: it scans the key, prints its
fingerprint and records it, and only for a host with no key recorded yet; a changed key is
always refused.

Secrets never travel on a command line: every script is sent on ssh's standard input to a
remote `sh -s` (under `sudo -n` when the user is not root), so a remote `ps` shows `sh -s` and
a local one shows the ssh command without the script.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from ..errors import UserError

CONNECT_TIMEOUT = 15  # seconds


@dataclass(frozen=True)
class Target:
    host: str
    user: str = "root"
    port: int = 22
    identity: str = ""  # private key file; empty: ssh's defaults and agent
    known_hosts: str = ""  # empty: ~/.ssh/known_hosts

    @property
    def known_hosts_file(self) -> str:
        return self.known_hosts or os.path.expanduser("~/.ssh/known_hosts")

    @property
    def key_name(self) -> str:
        """How known_hosts names this host: host, or [host]:port off port 22."""
        return self.host if self.port == 22 else "[%s]:%d" % (self.host, self.port)

    def __str__(self) -> str:
        return "%s@%s:%d" % (self.user, self.host, self.port)


def ssh_argv(target: Target, remote_command: str) -> List[str]:
    """The ssh command line: key-only, never prompting, host key checked strictly."""
    argv = ["ssh", "-p", str(target.port), "-l", target.user,
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=%s" % target.known_hosts_file,
            "-o", "GlobalKnownHostsFile=/dev/null",  # only the file we were told to trust
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            "-o", "ConnectTimeout=%d" % CONNECT_TIMEOUT, "-o", "ServerAliveInterval=15",
            "-o", "LogLevel=ERROR", "-T"]
    if target.identity:
        argv += ["-i", target.identity, "-o", "IdentitiesOnly=yes"]
    return argv + ["--", target.host, remote_command]


def shell_command(target: Target) -> str:
    """The remote command every script runs under: root's sh reading standard input."""
    return "sh -s" if target.user == "root" else "sudo -n sh -s"


def is_known(target: Target) -> bool:
    """Whether known_hosts has a key for this host (and port)."""
    if not Path(target.known_hosts_file).is_file():
        return False
    r = subprocess.run(["ssh-keygen", "-F", target.key_name, "-f", target.known_hosts_file],
                       capture_output=True, text=True)
    return r.returncode == 0 and bool(r.stdout.strip())


def unknown_key_message(target: Target, prints: Sequence[str] = ()) -> str:
    offered = " (it offers %s)" % ", ".join(prints) if prints else ""
    return ("the host key of %s is not in %s%s; compare with `ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub` run on that host and, if it matches, run again "
            "with --accept-new-host-key to record it"
            % (target.key_name, target.known_hosts_file, offered))


def scan_host_keys(target: Target) -> List[str]:
    """The remote's public host keys as known_hosts lines (ssh-keyscan)."""
    r = subprocess.run(["ssh-keyscan", "-T", str(CONNECT_TIMEOUT), "-p", str(target.port),
                        target.host], capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise UserError("no SSH server answers on %s port %d; start sshd there or pass "
                        "--ssh-port" % (target.host, target.port))
    return lines


def fingerprints(known_lines: Sequence[str]) -> List[str]:
    """`SHA256:... (ED25519)`-style fingerprints of known_hosts lines."""
    r = subprocess.run(["ssh-keygen", "-lf", "-"], input="\n".join(known_lines) + "\n",
                       capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():  # BITS SHA256:xxx HOST (TYPE)
        parts = line.split()
        if len(parts) >= 2:
            out.append("%s %s" % (parts[1], parts[-1]))
    return out


def accept_host_key(target: Target) -> List[str]:
    """Record the remote's host keys in known_hosts (only when none is recorded for it);
    returns their fingerprints for the caller to print."""
    if is_known(target):
        return []
    lines = scan_host_keys(target)
    prints = fingerprints(lines)
    path = Path(target.known_hosts_file)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path, "a") as f:
        for line in lines:
            f.write(line.rstrip("\n") + "\n")
    return prints


class RemoteError(UserError):
    pass


def run_script(target: Target, script: str, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell script on the remote, fed on standard input (never on a command line)."""
    argv = ssh_argv(target, shell_command(target))
    try:
        r = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RemoteError("%s did not finish within %.0f s" % (target, timeout))
    if r.returncode == 255:  # ssh itself failed
        raise RemoteError(ssh_failure(target, r.stderr))
    if check and r.returncode != 0:
        if "sudo:" in r.stderr and "password" in r.stderr:
            raise RemoteError(ssh_failure(target, r.stderr))
        raise RemoteError("on %s: %s" % (target.host, last_line(r.stderr or r.stdout)
                                         or "exit status %d" % r.returncode))
    return r


def upload_tree(target: Target, local_dir: Path, remote_dir: str, timeout: float = 900) -> None:
    """Copy a directory's files into remote_dir (a tar stream over ssh)."""
    remote = "mkdir -p %s && tar -x -C %s -f -" % (shlex.quote(remote_dir), shlex.quote(remote_dir))
    if target.user != "root":
        remote = "sudo -n sh -c %s" % shlex.quote(remote)
    tar = subprocess.Popen(["tar", "-c", "-C", str(local_dir), "."], stdout=subprocess.PIPE)
    try:
        r = subprocess.run(ssh_argv(target, remote), stdin=tar.stdout, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        tar.kill()
        raise RemoteError("copying %s to %s took more than %.0f s" % (local_dir, target.host,
                                                                     timeout))
    finally:
        if tar.stdout:
            tar.stdout.close()
        tar.wait()
    if r.returncode != 0:
        raise RemoteError(ssh_failure(target, r.stderr) if r.returncode == 255 else
                          "copying %s to %s:%s failed: %s" % (local_dir, target.host, remote_dir,
                                                              last_line(r.stderr)))


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def ssh_failure(target: Target, stderr: str) -> str:
    """One line saying what to fix when ssh itself failed."""
    text = stderr or ""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
        if is_known(target):
            return ("the host key of %s does not match the one recorded in %s; if the host was "
                    "reinstalled, remove the old key (ssh-keygen -R '%s' -f %s) and add it again"
                    % (target.key_name, target.known_hosts_file, target.key_name,
                       target.known_hosts_file))
        return unknown_key_message(target)
    if "Permission denied" in text:
        return ("%s refused the SSH key; put this host's public key in %s's "
                "~/.ssh/authorized_keys there, or pass --identity FILE" % (target.host, target.user))
    if "sudo" in text and "password" in text:
        return "%s on %s needs a password for sudo; give it passwordless sudo or use --ssh-user root" \
            % (target.user, target.host)
    return "cannot connect to %s: %s" % (target, last_line(text) or "ssh failed")


def check_key_known(target: Target, accept_new: bool, echo=print) -> None:  # type: ignore[no-untyped-def]
    """The host key policy, before the first connection: known, or explicitly accepted."""
    if is_known(target):
        return
    if not accept_new:
        raise UserError(unknown_key_message(target, fingerprints(scan_host_keys(target))))
    for fp in accept_host_key(target):
        echo("  host key of %s recorded in %s: %s" % (target.key_name, target.known_hosts_file, fp))


def remote_quote(value: str) -> str:
    return shlex.quote(value)

