"""Project file storage: paths stay inside, writes are atomic, archives cannot escape."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from cdsw_agent.projects.storage import FileError, ProjectFiles, extract_archive


@pytest.fixture
def files(tmp_path: Path) -> ProjectFiles:
    root = tmp_path / "project"
    root.mkdir()
    (root / "src").mkdir()
    (root / "src" / "a.py").write_text("print(1)\n")
    return ProjectFiles(root)


@pytest.mark.parametrize("bad", ["../x", "src/../../x", "/etc/passwd", "a\x00b", "\\etc"])
def test_escaping_paths_are_refused(files: ProjectFiles, bad: str) -> None:
    for op in (files.entry, files.read_text, files.list, files.mkdir, files.delete,
               files.download, lambda p: files.write_text(p, "x"), lambda p: files.move("src", p)):
        with pytest.raises(FileError) as e:
            op(bad)
        assert e.value.status == 400


def test_symlinks_are_listed_never_followed(files: ProjectFiles, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, files.root / "link")
    os.symlink(tmp_path, files.root / "dirlink")
    os.symlink("src/a.py", files.root / "inner")  # even a link that stays inside
    os.symlink("src", files.root / "innerdir")
    kinds = {e.name: e.type for e in files.list("")}
    assert kinds == {"src": "directory", "link": "symlink", "dirlink": "symlink",
                     "inner": "symlink", "innerdir": "symlink"}
    for rel in ("link", "inner"):
        with pytest.raises(FileError, match="symbolic link") as e:
            files.read_text(rel)
        assert e.value.status == 409
        with pytest.raises(FileError, match="symbolic link") as e:
            files.write_text(rel, "x")
        assert e.value.status == 409
    for rel in ("dirlink/new.txt", "innerdir/new.txt", "dirlink/secret.txt"):
        with pytest.raises(FileError, match="symbolic link") as e:
            files.write_text(rel, "x") if rel.endswith("new.txt") else files.read_text(rel)
        assert e.value.status == 409
    with pytest.raises(FileError) as e:
        files.mkdir("dirlink/sub")
    assert e.value.status == 409
    with pytest.raises(FileError) as e:
        files.list("dirlink")
    assert e.value.status == 409
    assert not (tmp_path / "new.txt").exists() and not (tmp_path / "sub").exists()
    assert outside.read_text() == "secret"
    # the link itself can be moved and deleted; what it points to stays
    files.move("dirlink", "src/moved")
    assert os.readlink(files.root / "src" / "moved") == str(tmp_path)
    files.delete("src/moved")
    files.delete("link")
    assert outside.read_text() == "secret" and not os.path.lexists(files.root / "link")


def test_read_refuses_binary_and_folders(files: ProjectFiles) -> None:
    (files.root / "bin.dat").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(FileError, match="not UTF-8") as e:
        files.read_text("bin.dat")
    assert e.value.status == 415
    with pytest.raises(FileError, match="folder"):
        files.read_text("src")


def test_write_is_atomic_and_leaves_no_temp_on_failure(files: ProjectFiles) -> None:
    files.write_text("src/a.py", "print(2)\n")
    assert (files.root / "src" / "a.py").read_text() == "print(2)\n"

    def boom():  # type: ignore[no-untyped-def]
        yield b"partial data"
        raise IOError("client went away")

    with pytest.raises(IOError):
        files.write_stream("src/a.py", boom(), max_bytes=None)
    assert (files.root / "src" / "a.py").read_text() == "print(2)\n"
    assert [p.name for p in (files.root / "src").iterdir()] == ["a.py"]


def test_size_limit_on_stream(files: ProjectFiles) -> None:
    with pytest.raises(FileError) as e:
        files.write_stream("big.bin", iter([b"x" * 600, b"x" * 600]), max_bytes=1000)
    assert e.value.status == 413
    assert not (files.root / "big.bin").exists()


def test_mkdir_move_delete(files: ProjectFiles) -> None:
    files.mkdir("data")
    with pytest.raises(FileError) as e:
        files.mkdir("data")
    assert e.value.status == 409
    files.move("src/a.py", "data/b.py")
    assert (files.root / "data" / "b.py").exists()
    with pytest.raises(FileError, match="into itself"):
        files.move("data", "data/inner")
    files.delete("data")
    assert not (files.root / "data").exists()
    with pytest.raises(FileError):
        files.delete("")


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt", "a/../../evil.txt"])
def test_zip_slip_refused(tmp_path: Path, name: str) -> None:
    arc = tmp_path / "a.zip"
    arc.write_bytes(_zip({"ok.txt": "fine", name: "evil"}))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(FileError) as e:
        extract_archive(arc, dest, 10**6)
    assert e.value.status == 422
    assert list(dest.iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists()


def test_tar_symlink_member_refused(tmp_path: Path) -> None:
    arc = tmp_path / "a.tar"
    with tarfile.open(arc, "w") as t:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        t.addfile(info)
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(FileError, match="link or special file"):
        extract_archive(arc, dest, 10**6)


def test_archive_bomb_refused(tmp_path: Path) -> None:
    arc = tmp_path / "bomb.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros", b"\0" * (5 * 1024 * 1024))
    arc.write_bytes(buf.getvalue())
    assert arc.stat().st_size < 100 * 1024
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(FileError) as e:
        extract_archive(arc, dest, 1024 * 1024)
    assert e.value.status == 413


def test_tar_gz_extracts(tmp_path: Path) -> None:
    arc = tmp_path / "p.tar.gz"
    with tarfile.open(arc, "w:gz") as t:
        data = b"hello"
        info = tarfile.TarInfo("dir/hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    dest = tmp_path / "d"
    dest.mkdir()
    assert extract_archive(arc, dest, 10**6) == 1
    assert (dest / "dir" / "hello.txt").read_bytes() == b"hello"


def test_not_an_archive(tmp_path: Path) -> None:
    arc = tmp_path / "x"
    arc.write_bytes(b"this is not an archive at all")
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(FileError, match="not a zip or tar"):
        extract_archive(arc, dest, 10**6)


def test_extraction_never_writes_through_a_link(tmp_path: Path) -> None:
    """Members are written through the destination's descriptors: a link met there (planted
    before or during extraction) is refused, not followed."""
    arc = tmp_path / "a.zip"
    arc.write_bytes(_zip({"a/x.txt": "evil", "ok.txt": "fine"}))
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "d"
    dest.mkdir()
    os.symlink(outside, dest / "a")
    with pytest.raises(FileError, match="cannot be extracted") as e:
        extract_archive(arc, dest, 10**6)
    assert e.value.status == 422
    assert list(outside.iterdir()) == []
