"""orchestrators/mount_inject.py: bind mounts attached to a running process's mount namespace.

Real processes in their own mount namespace (`unshare --mount --propagation private sleep`), and
one real container on the test dockerd; checked from inside the namespace with nsenter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from cdsw_agent.orchestrators.base import Mount
from cdsw_agent.orchestrators import mount_inject
from cdsw_agent.orchestrators.mount_inject import InjectMount, MountInjectError, inject

from .docker_fixtures import docker_engine  # noqa: F401
from .netns import busybox_rootfs, import_busybox

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(os.geteuid() != 0, reason="entering a mount namespace needs root")]

TEST_LABEL = "io.cdsw.test=mount-inject"


@pytest.fixture
def sleeper() -> Iterator[int]:
    """Pid of a process in a mount namespace of its own (private propagation: nothing leaks)."""
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("needs unshare and nsenter (util-linux)")
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "300"])
    try:
        own = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while os.readlink("/proc/%d/ns/mnt" % proc.pid) == own:  # until unshare exec'd sleep
            assert time.monotonic() < deadline, "unshare never entered a new mount namespace"
            time.sleep(0.02)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def in_ns(pid: int, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "sh", "-c", script],
                          capture_output=True, text=True, timeout=30)


def mount_points(pid: int) -> List[str]:
    return [line.split()[4] for line in Path("/proc/%d/mountinfo" % pid).read_text().splitlines()]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("content\n")
    return src


def test_directory_appears_inside_the_namespace_only(sleeper, source, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    inject(sleeper, [InjectMount(str(source), str(target))])
    assert in_ns(sleeper, "cat %s/file" % target).stdout == "content\n"
    assert str(target) in mount_points(sleeper)
    assert list(target.iterdir()) == []  # the host's target stays empty
    assert str(target) not in mount_points(os.getpid())


def test_read_only_refuses_writes_read_write_passes_them_to_the_source(sleeper, source, tmp_path):
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    # the orchestrators' Mount is accepted as well as InjectMount
    inject(sleeper, [Mount(str(source), str(ro), read_only=True), InjectMount(str(source), str(rw))])
    refused = in_ns(sleeper, "echo x > %s/new" % ro)
    assert refused.returncode != 0 and "Read-only" in refused.stderr
    assert not (source / "new").exists()
    written = in_ns(sleeper, "echo written > %s/new" % rw)
    assert written.returncode == 0, written.stderr
    assert (source / "new").read_text() == "written\n"


def test_missing_target_is_created_and_a_file_mounts_onto_a_file(sleeper, source, tmp_path):
    deep = tmp_path / "ct" / "a" / "b"
    one = tmp_path / "single.txt"
    one.write_text("host's own\n")
    inject(sleeper, [InjectMount(str(source), str(deep)),
                     InjectMount(str(source / "file"), str(one)),
                     InjectMount(str(source / "file"), str(tmp_path / "made" / "f.txt"))])
    assert in_ns(sleeper, "cat %s/file" % deep).stdout == "content\n"
    assert in_ns(sleeper, "cat %s" % one).stdout == "content\n"
    assert in_ns(sleeper, "cat %s/made/f.txt" % tmp_path).stdout == "content\n"
    assert one.read_text() == "host's own\n"
    # created in the namespace's file system (here the host's /tmp), as directories 0755
    assert (deep.stat().st_mode & 0o777) == 0o755


@pytest.mark.parametrize("where", ["inside", "last"])
def test_a_symlink_on_the_target_path_is_refused(sleeper, source, tmp_path, where):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    target = tmp_path / "link" / "sub" if where == "inside" else tmp_path / "link"
    before = mount_points(sleeper)
    with pytest.raises(MountInjectError) as e:
        inject(sleeper, [InjectMount(str(source), str(target))])
    assert "symbolic link" in str(e.value) and str(target) in str(e.value)
    assert mount_points(sleeper) == before
    assert list(elsewhere.iterdir()) == []


def test_process_that_does_not_exist(source, tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(MountInjectError, match=r"process %d\b.*No such process" % gone.pid):
        inject(gone.pid, [InjectMount(str(source), str(tmp_path / "t"))])


def test_missing_source(sleeper, tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(MountInjectError) as e:
        inject(sleeper, [InjectMount(str(missing), str(tmp_path / "t"))])
    assert str(missing) in str(e.value) and "No such file or directory" in str(e.value)
    with pytest.raises(MountInjectError, match="absolute"):
        inject(sleeper, [InjectMount(str(tmp_path), "../etc")])


def test_a_host_that_cannot_mount_says_so_by_its_exit_status(sleeper, source, tmp_path):
    """Not root: the helper's mounts fail with EPERM whatever they are, and it exits
    HOST_CANNOT (warm engines go off, sessions/warm_pool.py); a mount refused for its own
    sake exits REFUSED, and inject() tells the two apart by status, not by message."""
    helper = Path(tempfile.mkdtemp(prefix="cdsw-inject-"))  # readable by nobody, unlike ~
    try:
        helper.chmod(0o755)
        shutil.copy(mount_inject.__file__, helper / "mount_inject.py")
        request = json.dumps({"pid": sleeper, "mounts": [
            {"source": "/usr/share", "target": str(tmp_path / "t"), "read_only": True}]})
        # the system's Python: the test's own may live where nobody cannot reach (~/.pyenv)
        python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        proc = subprocess.run([python, "-I", "-S", str(helper / "mount_inject.py")],
                              input=request, capture_output=True, text=True, timeout=30,
                              user=65534, group=65534, extra_groups=[])
        assert proc.returncode == mount_inject.HOST_CANNOT, (proc.returncode, proc.stderr)
        assert "Operation not permitted" in proc.stderr, proc.stderr
    finally:
        shutil.rmtree(helper)
    for mounts in ([InjectMount(str(tmp_path / "gone"), str(tmp_path / "t"))],
                   [InjectMount(str(source), "../etc")]):
        with pytest.raises(MountInjectError) as e:
            inject(sleeper, mounts)
        assert e.value.host_cannot is False, e.value


def test_works_from_a_multi_threaded_caller(sleeper, source, tmp_path):
    # setns(CLONE_NEWNS) is refused in a multi-threaded process: inject runs a subprocess
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        assert threading.active_count() >= 2
        inject(sleeper, [InjectMount(str(source), str(tmp_path / "t"), read_only=True)])
        assert in_ns(sleeper, "cat %s/t/file" % tmp_path).stdout == "content\n"
    finally:
        stop.set()
        thread.join()


@pytest.mark.docker
def test_into_a_running_container(docker_engine, source, tmp_path):  # noqa: F811
    client = docker_engine.client
    image = import_busybox(client, busybox_rootfs(tmp_path / "busybox.tar"))
    container = client.containers.run(image, ["sleep", "300"], detach=True,
                                      labels={"io.cdsw.test": "mount-inject"})
    try:
        container.reload()
        pid = container.attrs["State"]["Pid"]
        inject(pid, [InjectMount(str(source), "/data", read_only=True)])
        cat = container.exec_run(["cat", "/data/file"])
        assert (cat.exit_code, cat.output) == (0, b"content\n")
        touch = container.exec_run(["busybox", "touch", "/data/x"])
        assert touch.exit_code != 0 and b"Read-only" in touch.output
        assert not (source / "x").exists()
    finally:
        docker_engine.remove_containers(TEST_LABEL)
