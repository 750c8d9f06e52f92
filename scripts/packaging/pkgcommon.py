"""Shared helpers for building the cluster packages: version, build time, byte-stable archives.

Every archive written here is reproducible: entries sorted, owners 0/0, modes normalised to
0644/0755, every timestamp = SOURCE_DATE_EPOCH, gzip header mtime 0 and no file name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]

# 1980-01-01: the earliest time a zip entry can carry; used when there is no commit yet.
FALLBACK_EPOCH = 315532800


class BuildError(Exception):
    """A build step that cannot continue; str() is one line naming what is wrong."""


def base_version(root: Path = ROOT) -> str:
    """The release version, read from cdsw_agent/__init__.py (never imported, so no deps)."""
    text = (root / "cdsw_agent" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not match:
        raise BuildError("cdsw_agent/__init__.py: __version__ not found")
    return match.group(1)


def build_number(root: Path = ROOT) -> int:
    """CDSW_BUILD_NUMBER if set, else the commit count of root's git checkout (or of this
    repository's, for a copy of the sources): it grows with every commit, so every build of a
    newer commit is a newer version for pip, Cloudera Manager and Ambari alike."""
    env = os.environ.get("CDSW_BUILD_NUMBER", "").strip()
    if env:
        if not env.isdigit():
            raise BuildError("CDSW_BUILD_NUMBER=%r: expected a whole number" % env)
        return int(env)
    for where in (root, ROOT):
        try:
            out = subprocess.run(["git", "-C", str(where), "rev-list", "--count", "HEAD"],
                                 capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            out = ""
        if out.isdigit():
            return int(out)
    raise BuildError("no build number: build from a git checkout or set CDSW_BUILD_NUMBER")


def version(root: Path = ROOT) -> str:
    """The version of every artifact: RELEASE.BUILD (0.1.0.812), all numeric, so the wheel
    (PEP 440), the parcel and CSD (Cloudera Manager compares dotted numbers) and the mpack
    (Ambari wants digits and dots) all order builds the same way."""
    return "%s.%d" % (base_version(root), build_number(root))


def parse_version(text: str) -> Tuple[int, ...]:
    """'0.1.0.812' -> (0, 1, 0, 812); raises ValueError on anything but digits and dots."""
    parts = text.split(".")
    if not all(p.isdigit() for p in parts):
        raise ValueError("not a dotted numeric version: %r" % text)
    return tuple(int(p) for p in parts)


def source_date_epoch(root: Path = ROOT) -> int:
    """SOURCE_DATE_EPOCH if set, else the last commit's time, else a constant."""
    env = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if env:
        if not env.isdigit():
            raise BuildError("SOURCE_DATE_EPOCH=%r: expected seconds since 1970" % env)
        return max(int(env), FALLBACK_EPOCH)
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%ct"],
                             capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        out = ""
    return max(int(out), FALLBACK_EPOCH) if out.isdigit() else FALLBACK_EPOCH


def sha1_file(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# An archive is described as {member path: (bytes, executable)}; directories are implied.
Entries = Dict[str, Tuple[bytes, bool]]


def _all_dirs(names: Iterable[str]) -> List[str]:
    dirs = set()
    for name in names:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs)


def tar_gz_bytes(entries: Entries, mtime: int) -> bytes:
    """A gzip'd ustar archive with explicit directory entries (Ambari needs the root dir entry)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in _all_dirs(entries):
            info = tarfile.TarInfo(d + "/")
            info.type = tarfile.DIRTYPE
            _normalise(info, 0o755, mtime)
            tar.addfile(info)
        for name in sorted(entries):
            data, executable = entries[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            _normalise(info, 0o755 if executable else 0o644, mtime)
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    # Level 1: the payload is wheels (already deflated); higher levels cost seconds, save ~1%.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=1) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _normalise(info: tarfile.TarInfo, mode: int, mtime: int) -> None:
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"


def zip_bytes(entries: Entries, mtime: int) -> bytes:
    """A jar/zip with directory entries, sorted, fixed times and Unix modes."""
    import time

    stamp = time.gmtime(max(mtime, FALLBACK_EPOCH))[:6]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in _all_dirs(entries):
            info = zipfile.ZipInfo(d + "/", date_time=stamp)
            info.external_attr = (0o40755 << 16) | 0x10
            info.create_system = 3
            zf.writestr(info, b"")
        for name in sorted(entries):
            data, executable = entries[name]
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return out.getvalue()


def png_icon(size: int = 32, rgb: Tuple[int, int, int] = (0x1f, 0x6f, 0xb5)) -> bytes:
    """A small valid PNG (a filled rounded tile with a light diagonal), made from code."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    rows = []
    for y in range(size):
        row = bytearray([0])  # filter type none
        for x in range(size):
            corner = min(x, size - 1 - x) + min(y, size - 1 - y) < 3
            if corner:
                row += bytes((255, 255, 255, 0))
            elif abs(x - y) < 3 or abs(x + y - size + 1) < 3:
                row += bytes((0xf2, 0xf6, 0xfa, 255))
            else:
                row += bytes(rgb + (255,))
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


def read_tree(base: Path, prefix: str = "", skip: Optional[Iterable[str]] = None) -> Entries:
    """Files under base as archive entries (executable bit kept); __pycache__ and *.pyc skipped."""
    skipped = set(skip or ())
    entries: Entries = {}
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base).as_posix()
        if path.is_dir() or "__pycache__" in rel.split("/") or rel.endswith(".pyc"):
            continue
        if rel in skipped:
            continue
        entries[prefix + rel] = (path.read_bytes(), os.access(path, os.X_OK))
    return entries


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
