"""The beneath-the-root opener: no symlink followed at any level, with openat2 and without."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from cdsw_agent.projects import safe_fs
from cdsw_agent.projects.storage import FileError, ProjectFiles

SECRET = "the master's secret"


@pytest.fixture(params=["openat2", "walk"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the kernel's openat2 and with the O_NOFOLLOW descriptor walk."""
    if request.param == "walk":
        monkeypatch.setattr(safe_fs, "OPENAT2", False)
    else:
        monkeypatch.setattr(safe_fs, "OPENAT2", None)
        root = os.open("/", safe_fs.DIR_FLAGS)
        try:
            os.close(safe_fs.open_beneath(root, ["tmp"], safe_fs.DIR_FLAGS))
        finally:
            os.close(root)
        if safe_fs.OPENAT2 is not True:
            pytest.skip("this kernel has no openat2 (Linux < 5.6); the walk is tested")
    return request.param


@pytest.fixture
def tree(tmp_path: Path, strategy: str) -> Iterator[Tuple[Path, Path, int]]:
    """project/a/b/c/file.txt, and outside/ with the same shape holding a secret."""
    root, outside = tmp_path / "project", tmp_path / "outside"
    for base, text in ((root, "inside"), (outside, SECRET)):
        (base / "a" / "b" / "c").mkdir(parents=True)
        (base / "a" / "b" / "c" / "file.txt").write_text(text)
    fd = os.open(str(root), safe_fs.DIR_FLAGS)
    yield root, outside, fd
    os.close(fd)


def _read(fd: int) -> str:
    try:
        return os.read(fd, 1000).decode()
    finally:
        os.close(fd)


PARTS = ("a", "b", "c", "file.txt")


def test_opens_a_plain_path(tree: Tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    assert _read(safe_fs.open_beneath(fd, PARTS)) == "inside"
    d = safe_fs.open_dir(fd, PARTS[:3])
    assert sorted(os.listdir(d)) == ["file.txt"]
    os.close(d)


@pytest.mark.parametrize("level", range(len(PARTS)))
@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_a_symlink_at_any_level_is_refused(tree: Tuple[Path, Path, int], level: int,
                                           target: str) -> None:
    root, outside, fd = tree
    swapped = root.joinpath(*PARTS[:level + 1])
    real = swapped.with_name(swapped.name + ".real")
    os.rename(swapped, real)
    # a link out of the project, or one to the very same place inside it: both refused
    os.symlink(outside.joinpath(*PARTS[:level + 1]) if target == "absolute" else real.name,
               swapped)
    with pytest.raises(safe_fs.Unsafe) as e:
        safe_fs.open_beneath(fd, PARTS)
    assert e.value.kind == "symlink" and e.value.where == "/".join(PARTS[:level + 1])
    if level < len(PARTS) - 1:
        with pytest.raises(safe_fs.Unsafe, match="symlink"):
            safe_fs.open_dir(fd, PARTS[:3])
        with pytest.raises(OSError):
            os.close(safe_fs.make_dirs(fd, PARTS[:3] + ("new",)))
    assert not (outside / "a" / "b" / "c" / "new").exists()


@pytest.mark.parametrize("parts", [("..", "outside"), ("a", "..", "..", "x"), ("/", "etc"),
                                   ("a", ""), ("a", "."), ("a/b",), ("a\x00",)])
def test_invalid_components_are_refused(tree: Tuple[Path, Path, int], parts: tuple) -> None:
    _, _, fd = tree
    with pytest.raises(safe_fs.Unsafe) as e:
        safe_fs.open_beneath(fd, parts)
    assert e.value.kind == "invalid"
    with pytest.raises(safe_fs.Unsafe):
        safe_fs.open_dir(fd, parts)


def test_missing_and_not_a_folder_are_explained(tree: Tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    with pytest.raises(safe_fs.Unsafe) as e:
        safe_fs.open_beneath(fd, ("a", "nope", "x"))
    assert (e.value.kind, e.value.where) == ("missing", "a/nope")
    with pytest.raises(safe_fs.Unsafe) as e:
        safe_fs.open_beneath(fd, PARTS + ("deeper",))
    assert (e.value.kind, e.value.where) == ("notdir", "a/b/c/file.txt")


def test_a_folder_swapped_after_opening_keeps_the_original(tree: Tuple[Path, Path, int]
                                                          ) -> None:
    """Work continues on the descriptor: a later swap of the path changes nothing for it."""
    root, outside, fd = tree
    held = safe_fs.open_dir(fd, ("a", "b"))
    os.rename(root / "a" / "b", root / "a" / "b.real")
    os.symlink(outside / "a" / "b", root / "a" / "b")
    assert _read(safe_fs.open_beneath(held, ("c", "file.txt"))) == "inside"
    w = os.open("new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=held)
    os.close(w)
    os.close(held)
    assert (root / "a" / "b.real" / "new.txt").exists()
    assert not (outside / "a" / "b" / "new.txt").exists()
    with pytest.raises(safe_fs.Unsafe, match="symlink"):
        safe_fs.open_beneath(fd, PARTS)


def test_exchanged_folders_are_refused(tree: Tuple[Path, Path, int]) -> None:
    """renameat2(RENAME_EXCHANGE) of a folder with a link out, as engine code can do."""
    root, outside, fd = tree
    libc = ctypes.CDLL(None, use_errno=True)
    os.symlink(outside / "a" / "b", root / "a" / "b.lnk")
    if libc.renameat2(-100, str(root / "a" / "b").encode(), -100,
                      str(root / "a" / "b.lnk").encode(), safe_fs.RENAME_EXCHANGE) != 0:
        pytest.skip("no renameat2 exchange here (errno %d)" % ctypes.get_errno())
    assert (root / "a" / "b").is_symlink()
    with pytest.raises(safe_fs.Unsafe, match="symlink"):
        safe_fs.open_beneath(fd, PARTS)
    assert _read(safe_fs.open_beneath(fd, ("a", "b.lnk", "c", "file.txt"))) == "inside"


def test_openat2_missing_falls_back_to_the_walk(tree: Tuple[Path, Path, int],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside, fd = tree
    monkeypatch.setattr(safe_fs, "OPENAT2", None)

    def enosys(*args: object) -> int:
        raise NotImplementedError

    monkeypatch.setattr(safe_fs, "_openat2", enosys)
    assert _read(safe_fs.open_beneath(fd, PARTS)) == "inside"
    assert safe_fs.OPENAT2 is False
    os.rename(root / "a", root / "a.real")
    os.symlink(outside / "a", root / "a")
    with pytest.raises(safe_fs.Unsafe, match="symlink"):
        safe_fs.open_beneath(fd, PARTS)


def test_remove_tree_removes_links_not_their_targets(tree: Tuple[Path, Path, int]) -> None:
    root, outside, fd = tree
    os.symlink(outside / "a", root / "a" / "b" / "out")
    os.symlink(outside / "a" / "b" / "c" / "file.txt", root / "a" / "f")
    safe_fs.remove_tree(fd, "a")
    assert not (root / "a").exists()
    assert (outside / "a" / "b" / "c" / "file.txt").read_text() == SECRET


def test_copy_tree_copies_links_as_links_and_skips_special_files(
        tree: Tuple[Path, Path, int], tmp_path: Path) -> None:
    root, outside, fd = tree
    os.symlink(outside / "a", root / "a" / "out")
    os.mkfifo(root / "a" / "pipe")
    dest = tmp_path / "copy"
    dest.mkdir()
    out = os.open(str(dest), safe_fs.DIR_FLAGS)
    special = []
    try:
        assert safe_fs.copy_tree(fd, out, on_special=special.append) == 1
    finally:
        os.close(out)
    assert special == [("a", "pipe")]
    assert os.readlink(dest / "a" / "out") == str(outside / "a")
    assert (dest / "a" / "b" / "c" / "file.txt").read_text() == "inside"
    budget = [3]
    dest2 = tmp_path / "copy2"
    dest2.mkdir()
    out = os.open(str(dest2), safe_fs.DIR_FLAGS)
    try:
        with pytest.raises(OSError) as e:
            safe_fs.copy_tree(fd, out, budget=budget)
        assert e.value.errno == errno.EFBIG
    finally:
        os.close(out)


def test_project_files_refuse_links_with_either_strategy(tree: Tuple[Path, Path, int]
                                                          ) -> None:
    """The storage layer on top: one clear 409 for a link, 404 for missing, 400 for a file."""
    root, outside, _ = tree
    files = ProjectFiles(root)
    os.symlink(outside / "a", root / "link")
    for op in (lambda: files.read_text("link/b/c/file.txt"), lambda: files.list("link"),
               lambda: files.write_text("link/b/new.txt", "x"), lambda: files.mkdir("link/n"),
               lambda: files.download("link"), lambda: files.move("a", "link/a"),
               lambda: files.delete("link/b"), lambda: files.download("link/b/c/file.txt")):
        with pytest.raises(FileError) as e:
            op()
        assert e.value.status == 409 and "symbolic link" in str(e.value), e.value
    with pytest.raises(FileError) as e:
        files.read_text("a/nope.txt")
    assert e.value.status == 404
    with pytest.raises(FileError) as e:
        files.list("a/b/c/file.txt")
    assert e.value.status == 400
    assert files.read_text("a/b/c/file.txt") == "inside"
    assert {e.name: e.type for e in files.list("")} == {"a": "directory", "link": "symlink"}
    assert sorted(p.name for p in (outside / "a" / "b").iterdir()) == ["c"]
    assert (outside / "a" / "b" / "c" / "file.txt").read_text() == SECRET
