"""Experiment snapshots and the master's reading of what the `cdsw` library recorded."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import cdsw
from cdsw_agent.experiments import snapshot, tracking


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "project"
    (p / ".git").mkdir(parents=True)
    (p / ".git" / "HEAD").write_text("ref: main\n")
    (p / "src").mkdir()
    (p / "src" / "a.py").write_text("print(1)\n")
    (p / "empty").mkdir()
    os.symlink("src/a.py", p / "link.py")
    os.symlink("/etc/hostname", p / "outside")
    os.mkfifo(p / "pipe")
    return p


def test_snapshot_copies_everything_but_special_files_and_says_so(project: Path,
                                                                   tmp_path: Path) -> None:
    dest = tmp_path / "runs" / "1" / "files"
    info = snapshot.take(project, dest)
    assert (info.files, info.bytes, info.skipped) == (2, len("ref: main\n") + len("print(1)\n"),
                                                      ["pipe"])
    assert (dest / ".git" / "HEAD").read_text() == "ref: main\n"
    assert (dest / "empty").is_dir() and not (dest / "pipe").exists()
    assert os.readlink(dest / "link.py") == "src/a.py"  # symlinks stay symlinks
    assert os.readlink(dest / "outside") == "/etc/hostname"
    assert info.describe() == ["snapshot of the project: 2 files, 19 bytes",
                               "not in the snapshot (sockets, FIFOs, devices): pipe"]
    (project / "src" / "a.py").write_text("changed\n")
    assert (dest / "src" / "a.py").read_text() == "print(1)\n"


def test_snapshot_failures_leave_nothing(project: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "runs" / "1" / "files"
    with pytest.raises(snapshot.SnapshotError, match="holds 19 bytes, more than the 10 bytes"):
        snapshot.take(project, dest, max_bytes=10)
    with pytest.raises(snapshot.SnapshotError, match="project folder .* is missing"):
        snapshot.take(tmp_path / "nope", dest)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(snapshot.shutil, "disk_usage",
                        lambda _: usage._replace(free=snapshot.HEADROOM_BYTES))
    with pytest.raises(snapshot.SnapshotError, match="not enough disk space"):
        snapshot.take(project, dest)
    monkeypatch.undo()

    real_copy = snapshot.safe_fs.copy_file
    calls = []

    def fill_disk(src: int, dest_dir: int, name: str, *args: Any) -> Any:
        calls.append(name)
        if len(calls) == 2:  # the disk fills up in the middle of the copy
            raise OSError(errno.ENOSPC, "No space left on device", name)
        return real_copy(src, dest_dir, name, *args)

    monkeypatch.setattr(snapshot.safe_fs, "copy_file", fill_disk)
    with pytest.raises(snapshot.SnapshotError, match="the disk filled up"):
        snapshot.take(project, dest)
    assert len(calls) == 2
    assert list(dest.parent.iterdir()) == []  # no partial copy left
    monkeypatch.undo()
    assert snapshot.take(project, dest).files == 2  # and a later try works


def test_records_are_read_defensively(tmp_path: Path) -> None:
    records = tmp_path / cdsw.RECORDS_FILE
    lines = [json.dumps({"metric": "a", "value": 1}), "not json", json.dumps([1, 2]),
             json.dumps({"metric": "a", "value": 2}), json.dumps({"metric": "b", "value": None}),
             json.dumps({"metric": "x" * 101, "value": 1}),
             json.dumps({"file": "../etc/passwd"}), json.dumps({"file": "/abs"}),
             json.dumps({"file": "ok/f.txt"}), json.dumps({"file": "ok/f.txt"}),
             '{"metric": "c", "value": "unterminated']
    records.write_text("\n".join(lines))
    got = tracking.read(records)
    assert got.metrics == {"a": 2} and got.history == {"a": [1, 2]}
    assert got.files == ["ok/f.txt"]
    assert got.notes == ["tracking: 7 malformed or excess records ignored"]
    # a records file planted as a symlink to a master file is not read
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"metric": "leak", "value": "s3cret"}) + "\n")
    records.unlink()
    os.symlink(secret, records)
    assert tracking.read(records).metrics == {}
    assert tracking.read(tmp_path / "missing").metrics == {}


def test_tracked_files_are_copied_only_when_regular_and_inside(tmp_path: Path) -> None:
    files, artifacts = tmp_path / "files", tmp_path / "artifacts"
    (files / "out").mkdir(parents=True)
    (files / "out" / "m.txt").write_text("model")
    (files / "big.bin").write_bytes(b"x" * 20)
    outside = tmp_path / "master-only"
    outside.mkdir()
    (outside / "m.txt").write_text("secret")
    os.symlink(outside, files / "linkdir")
    os.symlink(outside / "m.txt", files / "link.txt")
    kept, notes = tracking.collect_files(
        files, artifacts, ["out/m.txt", "big.bin", "linkdir/m.txt", "link.txt", "gone.txt"], 10)
    assert kept == [{"path": "out/m.txt", "size": 5}]
    assert (artifacts / "out" / "m.txt").read_text() == "model"
    assert [n.split(":")[0] for n in notes] == ["tracked file big.bin", "tracked file linkdir/m.txt",
                                                "tracked file link.txt", "tracked file gone.txt"]
    assert "grew to 20 bytes; the limit is 10" in notes[0]
    assert not (artifacts / "linkdir").exists() and not (artifacts / "link.txt").exists()
    assert tracking.artifact(artifacts, "out/m.txt") == artifacts / "out" / "m.txt"
    assert tracking.artifact(artifacts, "../artifacts/out/m.txt") is None
