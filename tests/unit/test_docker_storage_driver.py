"""The CDSW_DOCKER role picks a storage driver the data root's file system can hold."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cdsw_agent.roles import docker as role
from cdsw_agent.settings import load_settings

# root on overlayfs (a container), /var/lib/docker on an ext4 volume, a path with a space
MOUNTINFO = """\
1100 1000 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1101 1100 0:53 / /proc rw,nosuid - proc proc rw
1102 1100 8:1 /vols/docker /var/lib/docker rw,relatime - ext4 /dev/sda1 rw
1103 1100 0:60 / /srv/my\\040data rw - tmpfs tmpfs rw
1104 1100 8:2 / /var/lib/docker rw - xfs /dev/sdb1 rw
"""


@pytest.mark.parametrize("path,fstype", [
    ("/var/lib/cdsw/docker", "overlay"),
    ("/var/lib/docker", "xfs"),  # the later mount over the same point wins
    ("/var/lib/docker/volumes/x", "xfs"),
    ("/var/lib/dockerx", "overlay"),  # a prefix of the name is not the mount point
    ("/srv/my data/docker", "tmpfs"),
])
def test_filesystem_type_is_the_longest_containing_mount(path, fstype, monkeypatch):
    monkeypatch.setattr(role.os.path, "realpath", lambda p: path)
    assert role.filesystem_type(path, MOUNTINFO) == fstype


def test_filesystem_type_of_this_machines_root_is_known():
    assert role.filesystem_type("/") != ""


def _settings(tmp_path: Path, **overrides):
    env = {"CDSW_DOCKER_HOST": "unix://%s/run/docker.sock" % tmp_path,
           "CDSW_DOCKER_DATA_ROOT": str(tmp_path / "docker")}
    return load_settings(None, None, environ=env,
                         overrides=overrides or None)


@pytest.fixture
def host(monkeypatch):
    """A host whose file system type, kernel overlay support and fuse-overlayfs are set by the test."""
    state = {"fs": "ext4", "overlay": True, "fuse": False}
    monkeypatch.setattr(role, "filesystem_type", lambda path, mountinfo=None: state["fs"])
    monkeypatch.setattr(role, "_overlay_in_kernel", lambda: state["overlay"])
    real_which = role.shutil.which
    monkeypatch.setattr(role.shutil, "which", lambda name: "/usr/bin/fuse-overlayfs"
                        if name == "fuse-overlayfs" and state["fuse"] else
                        (None if name == "fuse-overlayfs" else real_which(name)))
    real_exists = role.os.path.exists
    monkeypatch.setattr(role.os.path, "exists",
                        lambda p: state["fuse"] if p == "/dev/fuse" else real_exists(p))
    return state


def test_default_is_auto(tmp_path):
    assert _settings(tmp_path).docker_storage_driver == "auto"


def test_overlay2_on_ext4(tmp_path, host):
    driver, why = role.choose_storage_driver(_settings(tmp_path))
    assert driver == "overlay2"
    assert why == "the data root %s is on ext4" % (tmp_path / "docker")


@pytest.mark.parametrize("fs", ["overlay", "aufs", "ecryptfs"])
def test_vfs_on_a_file_system_overlay2_cannot_stack_on(tmp_path, host, fs):
    host["fs"] = fs
    driver, why = role.choose_storage_driver(_settings(tmp_path))
    assert driver == "vfs"
    assert why.startswith("the data root %s is on %s, which overlay2 cannot stack on" %
                          (tmp_path / "docker", fs))
    assert "fuse-overlayfs is not installed" in why


def test_fuse_overlayfs_when_installed(tmp_path, host):
    host.update(fs="overlay", fuse=True)
    driver, why = role.choose_storage_driver(_settings(tmp_path))
    assert (driver, why.endswith("fuse-overlayfs is installed")) == ("fuse-overlayfs", True)


def test_no_overlay_in_kernel(tmp_path, host):
    host["overlay"] = False
    driver, why = role.choose_storage_driver(_settings(tmp_path))
    assert driver == "vfs" and why.startswith("the kernel has no overlay file system")


@pytest.mark.parametrize("explicit", ["overlay2", "vfs", "fuse-overlayfs"])
def test_explicit_setting_wins(tmp_path, host, explicit):
    host["fs"] = "overlay"
    driver, why = role.choose_storage_driver(_settings(tmp_path, docker_storage_driver=explicit))
    assert (driver, why) == (explicit, "set by docker_storage_driver")


def test_daemon_json_and_log_name_the_chosen_driver(tmp_path, host, caplog):
    host["fs"] = "overlay"
    s = _settings(tmp_path)
    with caplog.at_level(logging.INFO, logger=role.__name__):
        path = role.write_config(s)
    assert json.loads(path.read_text())["storage-driver"] == "vfs"
    assert any(r.getMessage().startswith("storage driver vfs: the data root") for r in caplog.records)


def test_preflight_names_a_missing_fuse_overlayfs(tmp_path, host):
    problems = role.prepare(_settings(tmp_path, docker_storage_driver="fuse-overlayfs"))
    assert any(p.startswith("fuse-overlayfs is not installed") for p in problems), problems
