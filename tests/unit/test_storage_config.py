"""Project storage without mounting anything: configuration, command lines, sshd restrictions,
credentials, mount table parsing and the watchdog's decisions (with a fake storage).

NFS cannot run on this machine (no kernel NFS client or server), so its mount is tested here
as a command line only.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, List, Optional

import pytest

from cdsw_agent import storage
from cdsw_agent.storage import mounts, sftp_server
from cdsw_agent.storage.base import ProjectStorage
from cdsw_agent.storage.config import (
    ENGINE_HOME,
    ENGINE_UID,
    StorageConfig,
    StorageError,
    from_settings,
)
from cdsw_agent.storage.local import LocalStorage
from cdsw_agent.storage.nfs import NfsStorage, nfs_command
from cdsw_agent.storage.sshfs import (
    SshfsStorage,
    install_credentials,
    known_hosts_line,
    sshfs_command,
)
from cdsw_agent.storage.watchdog import MountWatchdog


def stub(settings: Any, **storage_settings: Any) -> SimpleNamespace:
    """Settings with some storage_* values replaced (also ones the schema would refuse)."""
    return SimpleNamespace(projects_dir=settings.projects_dir, **dict(settings.as_dict(),
                                                                      **storage_settings))


def config(tmp_path: Path, **kw: Any) -> StorageConfig:
    base: dict = dict(backend="sshfs", role="worker", projects_dir=tmp_path / "projects",
                      state_dir=tmp_path / "storage", master_host="master.example.com")
    base.update(kw)
    return StorageConfig(**base)


# --- configuration ------------------------------------------------------------------------

def test_auto_is_local_on_the_master_and_sshfs_on_a_worker(settings: Any) -> None:
    master, worker = from_settings(settings, "master"), from_settings(settings, "worker")
    assert (master.backend, master.serve_sftp, master.explicit) == ("local", True, False)
    assert (worker.backend, worker.serve_sftp) == ("sshfs", False)
    assert master.projects_dir == worker.projects_dir == Path(settings.data_dir) / "projects"
    assert worker.state_dir == Path(settings.data_dir) / "storage"
    assert worker.ssh_dir == worker.state_dir / "ssh"
    assert worker.master_host == settings.master_host
    assert (worker.ssh_port, worker.ssh_user) == (2222, "cdsw-storage")
    assert isinstance(storage.for_node(settings, "master"), LocalStorage)
    assert isinstance(storage.for_node(settings, "worker"), SshfsStorage)


def test_explicit_backends(settings: Any) -> None:
    local = from_settings(stub(settings, storage_backend="local"), "master")
    assert (local.backend, local.serve_sftp, local.explicit) == ("local", False, True)
    assert from_settings(stub(settings, storage_backend="local"), "worker").backend == "local"
    served = from_settings(stub(settings, storage_backend="sshfs", storage_ssh_port=2022), "master")
    assert (served.backend, served.serve_sftp, served.ssh_port) == ("local", True, 2022)
    nfs = stub(settings, storage_backend="nfs", storage_nfs_export="nfs1:/export/cdsw")
    for role in ("master", "worker"):
        c = from_settings(nfs, role)
        assert (c.backend, c.nfs_export, c.serve_sftp) == ("nfs", "nfs1:/export/cdsw", False)
        assert isinstance(storage.for_config(c), NfsStorage)


def test_bad_configuration_is_one_clear_line(settings: Any) -> None:
    with pytest.raises(StorageError, match="storage_backend 'ceph': expected one of auto"):
        from_settings(stub(settings, storage_backend="ceph"), "worker")
    with pytest.raises(StorageError, match="storage_nfs_export is empty"):
        from_settings(stub(settings, storage_backend="nfs"), "worker")
    with pytest.raises(ValueError):
        from_settings(settings, "gateway")


def test_defaults_come_from_the_settings_schema(settings: Any) -> None:
    from cdsw_agent.settings.schema import BY_NAME

    c = from_settings(settings, "worker")
    assert (c.ssh_port, c.ssh_user, c.nfs_options, c.check_seconds) == (
        BY_NAME["storage_ssh_port"].default, BY_NAME["storage_ssh_user"].default,
        BY_NAME["storage_nfs_options"].default, BY_NAME["storage_check_seconds"].default)


def test_engine_constants_match_the_engine_image() -> None:
    from cdsw_agent.images import recipe

    assert (ENGINE_UID, ENGINE_HOME) == (recipe.ENGINE_UID, recipe.ENGINE_HOME)


def test_engine_mount_is_the_project_folder_at_home_cdsw(settings: Any) -> None:
    m = storage.engine_mount(settings, 7)
    assert (m.source, m.target, m.read_only) == \
        (str(settings.projects_dir / "7"), "/home/cdsw", False)
    assert storage.for_node(settings, "worker").engine_mount(7) == m  # same path on every node
    for bad in (0, -1, "7", True, None):
        with pytest.raises(StorageError, match="expected a positive integer"):
            storage.engine_mount(settings, bad)  # type: ignore[arg-type]


# --- command lines ------------------------------------------------------------------------

def test_sshfs_command_line() -> None:
    argv = sshfs_command("cdsw-storage", "master.example.com", 2222, "/d/ssh/id_ed25519",
                         "/d/ssh/known_hosts", "/var/lib/cdsw/projects")
    assert argv[:6] == ["sshfs", "cdsw-storage@master.example.com:/", "/var/lib/cdsw/projects",
                        "-p", "2222", "-o"]
    options = argv[6].split(",")
    for wanted in ("reconnect", "ServerAliveInterval=15", "IdentityFile=/d/ssh/id_ed25519",
                   "UserKnownHostsFile=/d/ssh/known_hosts", "StrictHostKeyChecking=yes",
                   "BatchMode=yes", "IdentitiesOnly=yes", "allow_other", "default_permissions"):
        assert wanted in options, wanted
    assert len(argv) == 7


def test_sshfs_command_variants() -> None:
    argv = sshfs_command("u", "fd00::1", 22, "/k", "/kh", "/m", strict=False)
    assert argv[1] == "u@[fd00::1]:/"
    assert "StrictHostKeyChecking=accept-new" in argv[6].split(",")
    with pytest.raises(StorageError, match="contains a comma"):
        sshfs_command("u", "h", 22, "/keys/a,b", "/kh", "/m")


def test_nfs_command_line() -> None:
    """NFS cannot be mounted on this machine; the command line is what can be checked."""
    argv = nfs_command("nfs.example.com:/export/cdsw", "rw,hard,nfsvers=4.1",
                       "/var/lib/cdsw/projects")
    assert argv == ["mount", "-t", "nfs", "-o", "rw,hard,nfsvers=4.1",
                    "nfs.example.com:/export/cdsw", "/var/lib/cdsw/projects"]
    assert nfs_command("[fd00::2]:/x", "", "/m") == ["mount", "-t", "nfs", "[fd00::2]:/x", "/m"]
    with pytest.raises(StorageError, match="expected HOST:/PATH"):
        nfs_command("/export/cdsw", "rw", "/m")
    with pytest.raises(StorageError, match="no spaces"):
        nfs_command("h:/x", "rw, hard", "/m")
    nfs = NfsStorage(config(Path("/srv"), backend="nfs", nfs_export="h:/x", nfs_options="ro"))
    assert nfs.mount_command() == ["mount", "-t", "nfs", "-o", "ro", "h:/x", "/srv/projects"]
    assert nfs.fstypes == ("nfs", "nfs4")


def test_known_hosts_line() -> None:
    assert known_hosts_line("m.example.com", 2222, "ssh-ed25519 AAAA") == \
        "[m.example.com]:2222 ssh-ed25519 AAAA\n"
    assert known_hosts_line("m.example.com", 22, " ssh-ed25519 AAAA\n") == \
        "m.example.com ssh-ed25519 AAAA\n"


# --- the master's sshd --------------------------------------------------------------------

def test_sshd_config_confines_the_account_to_sftp_in_the_projects_folder(tmp_path: Path) -> None:
    c = config(tmp_path, role="master", backend="local", ssh_port=2022, ssh_user="store",
               serve_sftp=True)
    text = sftp_server.render_config(c)
    lines = [line.strip() for line in text.splitlines()]
    match = lines.index("Match User store")
    # everything after Match belongs to it, so every global restriction comes before
    assert lines[match + 1:] == ["ChrootDirectory %s" % c.projects_dir,
                                 "ForceCommand internal-sftp"]
    for wanted in ("Port 2022", "AllowUsers store", "PasswordAuthentication no", "PermitTTY no",
                   "AllowTcpForwarding no", "AllowStreamLocalForwarding no", "X11Forwarding no",
                   "PermitRootLogin no", "AuthenticationMethods publickey",
                   "AuthorizedKeysFile %s" % (c.sshd_dir / "authorized_keys"),
                   "HostKey %s" % (c.sshd_dir / "ssh_host_ed25519_key")):
        assert wanted in lines[:match], wanted
    line = sftp_server.authorized_keys_line("ssh-ed25519 AAAAC3 cdsw-storage\n")
    assert line == 'restrict,command="internal-sftp" ssh-ed25519 AAAAC3 cdsw-storage\n'


def test_chroot_rule_names_the_offending_directory(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    projects.mkdir()
    problem = sftp_server.chroot_problem(projects)
    assert problem is not None and "sshd ChrootDirectory rule" in problem
    os.chmod(str(projects), 0o777)
    assert "%s root-owned" % projects in (sftp_server.chroot_problem(projects) or "")
    if os.stat("/").st_uid == 0 and not os.stat("/").st_mode & 0o022:
        assert sftp_server.chroot_problem(Path("/")) is None


def test_keys_are_generated_once_and_authorised_restricted(tmp_path: Path) -> None:
    c = config(tmp_path, role="master", backend="local", serve_sftp=True)
    sftp_server.ensure_keys(c)
    key = (c.ssh_dir / "id_ed25519").read_text()
    assert key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert stat.S_IMODE(os.stat(str(c.ssh_dir / "id_ed25519")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(c.ssh_dir)).st_mode) == 0o700
    public = (c.ssh_dir / "id_ed25519.pub").read_text().split()
    assert (c.sshd_dir / "authorized_keys").read_text() == \
        'restrict,command="internal-sftp" %s\n' % " ".join(public)
    sftp_server.ensure_keys(c)
    assert (c.ssh_dir / "id_ed25519").read_text() == key  # kept across restarts
    answer = sftp_server.worker_credentials(c)
    assert answer["backend"] == "sshfs" and answer["private_key"] == key
    assert answer["host_key"].startswith("ssh-ed25519 ") and len(answer["host_key"].split()) == 2
    assert (answer["user"], answer["port"], answer["path"]) == (c.ssh_user, c.ssh_port, "/")
    nfs = c.with_(serve_sftp=False, backend="nfs")
    assert sftp_server.worker_credentials(nfs) == {"backend": "nfs"}
    with pytest.raises(StorageError, match="no storage key yet"):
        sftp_server.worker_credentials(config(tmp_path / "other", serve_sftp=True))


# --- worker credentials -------------------------------------------------------------------

def test_install_credentials(tmp_path: Path) -> None:
    master = config(tmp_path / "m", role="master", backend="local", serve_sftp=True)
    sftp_server.ensure_keys(master)
    worker = config(tmp_path / "w", master_host="10.0.0.5")
    key, known, port, user = install_credentials(worker, sftp_server.worker_credentials(master))
    assert key.read_text() == (master.ssh_dir / "id_ed25519").read_text()
    assert stat.S_IMODE(os.stat(str(key)).st_mode) == 0o600
    assert known.read_text().startswith("[10.0.0.5]:2222 ssh-ed25519 ")
    assert (port, user) == (2222, "cdsw-storage")
    storage_ = SshfsStorage(worker, fetch=lambda: sftp_server.worker_credentials(master))
    storage_.before_mount()
    argv = storage_.mount_command()
    assert argv[1] == "cdsw-storage@10.0.0.5:/" and "IdentityFile=%s" % key in argv[6]


@pytest.mark.parametrize("answer, message", [
    ({"backend": "nfs"}, "not sshfs"),
    ({"backend": "sshfs", "user": "x y", "port": 22}, "no valid user and port"),
    ({"backend": "sshfs", "user": "u", "port": 22, "private_key": "nope",
      "host_key": "ssh-ed25519 AAAA"}, "no valid private key"),
])
def test_install_credentials_rejects_bad_answers(tmp_path: Path, answer: dict,
                                                 message: str) -> None:
    with pytest.raises(StorageError, match=message):
        install_credentials(config(tmp_path), answer)
    assert not (tmp_path / "storage" / "ssh" / "id_ed25519").exists()


def test_worker_without_a_way_to_get_the_key(tmp_path: Path) -> None:
    s = SshfsStorage(config(tmp_path), fetch=None)
    with pytest.raises(StorageError, match="cannot get the storage key from the master"):
        s.before_mount()
    key = tmp_path / "given_key"
    s = SshfsStorage(config(tmp_path, ssh_key=str(key)))
    with pytest.raises(StorageError, match="storage_ssh_key .* is not readable"):
        s.before_mount()
    key.write_text("k")
    s.before_mount()
    assert "StrictHostKeyChecking=accept-new" in s.mount_command()[6]


# --- pre-flight ---------------------------------------------------------------------------

def test_worker_prepare_one_line_per_missing_piece(settings: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sshfs, no fusermount
    problems = storage.worker_prepare(settings)
    assert any(p.startswith("sshfs not found; install sshfs") for p in problems), problems
    assert any(p.startswith("fusermount not found") for p in problems), problems
    assert all("\n" not in p for p in problems)
    monkeypatch.setattr(os.path, "exists", lambda p: False if p == "/dev/fuse" else True)
    assert any("/dev/fuse is missing" in p for p in storage.worker_prepare(settings))


def test_master_with_auto_storage_is_never_stopped_by_it(
        settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp_server, "sshd_path", lambda: None)
    assert storage.master_prepare(settings) == []
    with caplog.at_level(logging.WARNING):
        service = storage.start_master(settings)
    service.stop()
    assert "project files are not shared with workers: sshd not found" in caplog.text
    explicit = stub(settings, storage_backend="sshfs")
    assert any("sshd not found" in p for p in storage.master_prepare(explicit))
    with pytest.raises(StorageError, match="cannot serve project files to workers"):
        storage.start_master(explicit)


# --- mount table and bounded commands ------------------------------------------------------

MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid - proc proc rw
90 22 0:50 / /var/lib/cdsw/projects rw,nosuid,nodev - fuse.sshfs cdsw-storage@m:/ rw,user_id=0
91 90 0:51 / /var/lib/cdsw/projects rw - nfs4 nfs1:/export rw
92 22 0:52 / /mnt/with\\040space rw - fuse.sshfs u@h:/a\\134b rw
"""


def test_mountinfo_parsing() -> None:
    top = mounts.mount_entry(Path("/var/lib/cdsw/projects/"), MOUNTINFO)
    assert top == mounts.MountEntry("/var/lib/cdsw/projects", "nfs4", "nfs1:/export", "0:51")
    spaced = mounts.mount_entry(Path("/mnt/with space"), MOUNTINFO)
    assert spaced is not None and spaced.source == "u@h:/a\\b"
    assert mounts.mount_entry(Path("/var/lib/cdsw"), MOUNTINFO) is None


def test_bounded_command_never_waits_past_its_deadline() -> None:
    started = time.monotonic()
    code, why = mounts.run_bounded(["sleep", "30"], 0.3)
    assert code is None and "did not finish within" in why
    assert time.monotonic() - started < 5
    assert mounts.run_bounded(["sh", "-c", "echo out; exit 3"], 5) == (3, "out")
    code, why = mounts.run_bounded(["/nonexistent/tool"], 5)
    assert code is None and why.startswith("cannot run /nonexistent/tool")


# --- watchdog ------------------------------------------------------------------------------

class FakeStorage(ProjectStorage):
    name = "fake"

    def __init__(self, tmp_path: Path, problems: List[Optional[str]], recover: bool = False,
                 remount_error: Optional[str] = None):
        super().__init__(config(tmp_path, hang_grace=0.5))
        self.problems, self.recover, self.remount_error = problems, recover, remount_error
        self.remount_calls = 0

    def check(self) -> Optional[str]:
        return self.problems.pop(0) if self.problems else None

    def ensure(self) -> None:
        pass

    def remount(self) -> None:
        self.remount_calls += 1
        if self.remount_error:
            raise StorageError(self.remount_error)

    def may_recover(self) -> bool:
        return self.recover


def test_watchdog_remounts_a_dead_mount_and_logs_one_line(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeStorage(tmp_path, [None, "Transport endpoint is not connected", None])
    w = MountWatchdog(fake, 60)
    with caplog.at_level(logging.INFO, logger="cdsw_agent.storage"):
        assert w.check_once() and fake.remount_calls == 0
        assert w.check_once() and fake.remount_calls == 1
        assert w.check_once()
    remounted = [r for r in caplog.records if "remounted" in r.getMessage()]
    assert len(remounted) == 1
    assert "Transport endpoint is not connected" in remounted[0].getMessage()
    assert w.state()["mounted"] is True and w.state()["remounts"] == 1


def test_watchdog_waits_for_a_mount_that_may_recover(tmp_path: Path) -> None:
    fake = FakeStorage(tmp_path, ["stat did not finish within 10s"] * 3, recover=True)
    w = MountWatchdog(fake, 60)
    assert not w.check_once()
    assert fake.remount_calls == 0 and w.last_error == "stat did not finish within 10s"
    time.sleep(0.6)  # past hang_grace
    assert w.check_once() and fake.remount_calls == 1


def test_watchdog_reports_a_failing_remount_once(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeStorage(tmp_path, ["not mounted"] * 3, remount_error="sshfs mount failed: refused")
    w = MountWatchdog(fake, 60)
    with caplog.at_level(logging.WARNING, logger="cdsw_agent.storage"):
        for _ in range(3):
            assert not w.check_once()
    assert fake.remount_calls == 3
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
    beat = storage.heartbeat_fields({"node_id": "n1", "checks": {"docker": "ok"}}, w)
    assert beat["node_id"] == "n1"
    assert beat["checks"] == {"docker": "ok",
                              "project_storage": "not mounted: sshfs mount failed: refused"}
    assert beat["storage"]["mounted"] is False and beat["storage"]["last_error"].endswith("refused")
    assert storage.heartbeat_fields({"checks": {}}, None) == {"checks": {}}


def test_watchdog_thread_stops_and_releases(tmp_path: Path) -> None:
    fake = FakeStorage(tmp_path, [])
    released: List[bool] = []
    fake.release = lambda: released.append(True)  # type: ignore[method-assign]
    w = MountWatchdog(fake, 0.05).start()
    deadline = time.monotonic() + 5
    while w.checked_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop(release=True)
    assert w.mounted is False and released == [True]
    assert not w._thread.is_alive()  # type: ignore[union-attr]


def test_worker_reports_a_master_without_the_storage_endpoint(settings: Any) -> None:
    """Until the master answers POST /cluster/storage, the worker keeps running and says why."""
    calls: List[str] = []

    def post(path: str, **fields: Any) -> dict:
        calls.append(path)
        raise RuntimeError("master http://m:8080/api/v1/cluster/storage answered 404: not found")

    watchdog = MountWatchdog(storage.for_node(settings, "worker", post), 60)
    assert not watchdog.check_once()
    assert calls == ["/storage"]
    assert watchdog.last_error == ("cannot get the storage key from the master: master "
                                   "http://m:8080/api/v1/cluster/storage answered 404: not found")
    assert mounts.mount_entry(settings.projects_dir) is None
