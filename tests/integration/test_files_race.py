"""The files API against an adversary swapping project files and folders for symlinks.

Engine code owns the project folder and can swap any entry for a link out of the project at any
moment. A separate process does exactly that, as fast as it can (renameat2 RENAME_EXCHANGE when
the kernel has it, plain renames otherwise), while the test drives every file operation through
the API (read, download, folder archive, list, write, mkdir, move, delete, upload) and the
snapshots experiments and model builds take. Nothing outside the project may be read, created,
changed or removed, and no operation may fail with a server error.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from cdsw_agent.experiments import snapshot as experiment_snapshot
from cdsw_agent.models import builds

from ..conftest import Api

SECRET = "TOP-SECRET-master-session-key"
SECONDS_PER_OPERATION = 1.5
MAX_SECONDS_PER_OPERATION = 20

# name, its twin (a link out of the project), what the link points to (relative to outside/)
PAIRS = [("race.txt", "race.lnk", "secret.txt"), ("d", "d.lnk", "dir"),
         ("e/f", "e/f.lnk", "dir")]

ADVERSARY = r'''
import ctypes, errno, os, stat, sys, time
root, outside, deadline = sys.argv[1], sys.argv[2], float(sys.argv[3])
pairs = [a.split(":") for a in sys.argv[4:]]
libc = ctypes.CDLL(None, use_errno=True)
exchange = hasattr(libc, "renameat2")
os.chdir(root)
swaps, junk = 0, 0

def kind(p):
    try:
        return "link" if stat.S_ISLNK(os.lstat(p).st_mode) else "real"
    except FileNotFoundError:
        return None

def make_real(p, folder):
    tmp = p + ".tmp-real"
    if folder:
        os.mkdir(tmp)
        with open(os.path.join(tmp, "race.txt"), "w") as f:
            f.write("harmless")
        os.mkdir(os.path.join(tmp, "sub"))
    else:
        with open(tmp, "w") as f:
            f.write("harmless")
    os.rename(tmp, p)

def make_link(p, target):
    tmp = p + ".tmp-link"
    os.symlink(os.path.join(outside, target), tmp)
    os.rename(tmp, p)

def repair(name, twin, target):
    """Keeps one real entry and one link out among the two names, whatever the API did."""
    global junk
    folder = target == "dir"
    a, b = kind(name), kind(twin)
    if a == "link" and b == "real" or a == "real" and b == "link":
        return
    for p, k in ((name, a), (twin, b)):
        if k is not None:
            junk += 1
            os.rename(p, ".junk-%d" % junk)
    make_real(name, folder)
    make_link(twin, target)

for name, twin, target in pairs:
    repair(name, twin, target)
while time.time() < deadline and not os.path.exists(os.path.join(outside, "..", "stop")):
    for name, twin, target in pairs:
        try:
            if exchange and libc.renameat2(-100, name.encode(), -100, twin.encode(), 2) == 0:
                swaps += 1
                continue
            if exchange and ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS):
                exchange = False
            if not exchange:
                os.rename(name, name + ".swap")
                os.rename(twin, name)
                os.rename(name + ".swap", twin)
                swaps += 1
        except OSError:
            pass
    if swaps % 16 == 0:
        for pair in pairs:
            try:
                repair(*pair)
            except OSError:
                pass
print(swaps, "exchange" if exchange else "rename")
'''


def _state(top: Path) -> Dict[str, Tuple[Any, ...]]:
    """Everything under top as it is on disk: kind, size, times, content, link targets."""
    out: Dict[str, Tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[p] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[p] = ("dir", st.st_mtime_ns)
            else:
                with open(p, "rb") as f:
                    out[p] = ("file", st.st_mtime_ns, st.st_size, f.read())
    return out


def _tar_contents(data: bytes) -> bytes:
    """The names and contents of every member of a .tar.gz, concatenated."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        for m in t.getmembers():
            out.write(m.name.encode() + b"\n")
            if m.isfile():
                f = t.extractfile(m)
                assert f is not None
                out.write(f.read())
    return out.getvalue()


def _regular_files(top: Path) -> bytes:
    """Names and contents of the regular files of a copy (links are not read)."""
    out = io.BytesIO()
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out.write(p.encode() + b"\n")
            if stat.S_ISREG(os.lstat(p).st_mode):
                with open(p, "rb") as f:
                    out.write(f.read())
    return out.getvalue()


def test_swapping_symlinks_never_lets_the_api_out(api: Api, tmp_path: Path) -> None:
    c = api.client_for(api.user())
    pid = c.post("/api/v1/projects", json={"name": "race"}).json()["id"]
    base = "/api/v1/projects/%d/files" % pid
    projects = api.settings.projects_dir
    root = projects / str(pid)
    outside = tmp_path / "outside"
    (outside / "dir" / "sub").mkdir(parents=True)
    for p in ("secret.txt", "dir/race.txt", "dir/sub/x.txt", "dir/only-outside.txt"):
        (outside / p).write_text(SECRET)
    (root / "e").mkdir()
    (root / "g").mkdir()
    (root / "race.txt").write_text("harmless")
    for d in ("d", "e/f"):
        (root / d / "sub").mkdir(parents=True)
        (root / d / "race.txt").write_text("harmless")
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    before = _state(outside)
    around = sorted(os.listdir(tmp_path)), sorted(os.listdir(projects))

    statuses: Dict[str, Counter] = {}
    leaks: List[str] = []
    n = [0]

    def call(op: str, r: Any) -> Any:
        statuses.setdefault(op, Counter())[r.status_code] += 1
        assert r.status_code < 500, "%s: %s" % (op, r.text)
        body = r.content
        if op == "archive" and r.status_code == 200:
            body = _tar_contents(body)
        if SECRET.encode() in body or b"only-outside" in body:
            leaks.append("%s %s" % (op, r.request.url))
        return r

    def read() -> None:
        for p in ("race.txt", "d/race.txt", "e/f/race.txt"):
            call("read", c.get(base + "/content", params={"path": p}))

    def download() -> None:
        for p in ("race.txt", "d/race.txt", "e/f/race.txt"):
            call("download", c.get(base + "/download", params={"path": p}))

    def archive() -> None:
        for p in ("d", "e", ""):
            call("archive", c.get(base + "/download", params={"path": p}))

    def listing() -> None:
        for p in ("d", "e/f", "d/sub"):
            call("list", c.get(base, params={"path": p}))

    def write() -> None:
        for p in ("d/new.txt", "e/f/new.txt", "d/sub/new.txt", "race.txt"):
            call("write", c.put(base + "/content", json={"path": p, "content": "written"}))

    def mkdir() -> None:
        n[0] += 1
        for p in ("d/made-%d" % n[0], "e/f/made-%d" % n[0], "d/sub/made-%d" % n[0]):
            call("mkdir", c.post(base + "/mkdir", json={"path": p}))

    def move() -> None:
        n[0] += 1
        call("move", c.put(base + "/content", json={"path": "g/m-%d" % n[0], "content": "m"}))
        call("move", c.post(base + "/move", json={"source": "g/m-%d" % n[0],
                                                  "destination": "d/m-%d" % n[0]}))
        call("move", c.post(base + "/move", json={"source": "d/race.txt",
                                                  "destination": "d/moved.txt"}))
        call("move", c.post(base + "/move", json={"source": "d/moved.txt",
                                                  "destination": "e/f/sub/moved-%d" % n[0]}))

    def delete() -> None:
        for p in ("d/sub", "e/f/sub", "d/race.txt", "e/f/race.txt"):
            call("delete", c.delete(base, params={"path": p}))
        for p in ("d/sub", "e/f/sub"):  # something to delete next time
            call("delete", c.post(base + "/mkdir", json={"path": p}))
            call("delete", c.put(base + "/content", json={"path": p + "/x.txt", "content": "x"}))

    def upload() -> None:
        for p in ("d", "e/f", "d/sub"):
            call("upload", c.post(base + "/upload", params={"path": p},
                                  files=[("files", ("up.txt", b"uploaded"))]))

    def snapshots() -> None:
        n[0] += 1
        dest = snaps / ("experiment-%d" % n[0])
        try:
            experiment_snapshot.take(root, dest)
        except experiment_snapshot.SnapshotError as e:  # e.g. a folder removed mid-copy
            statuses.setdefault("snapshot", Counter())[str(e)[:60]] += 1
        else:
            statuses.setdefault("snapshot", Counter())["ok"] += 1
        model = snaps / ("build-%d" % n[0]) / "files"
        builds.snapshot(root, model)
        for copy in (dest, model):
            if copy.exists():
                if SECRET.encode() in _regular_files(copy) or b"only-outside" in \
                        _regular_files(copy):
                    leaks.append("snapshot %s" % copy)

    operations: List[Tuple[str, Callable[[], None]]] = [
        ("read", read), ("download", download), ("archive", archive), ("list", listing),
        ("write", write), ("mkdir", mkdir), ("move", move), ("delete", delete),
        ("upload", upload), ("snapshot", snapshots)]
    budget = MAX_SECONDS_PER_OPERATION * len(operations) + 60
    adversary = subprocess.Popen(
        [sys.executable, "-c", ADVERSARY, str(root), str(outside), str(time.time() + budget)]
        + [":".join(p) for p in PAIRS], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)  # the adversary is running before the first request
        for name, op in operations:
            start = time.monotonic()
            # at least SECONDS_PER_OPERATION, and until the operation met both the real entry
            # and the link (on a busy machine that can take longer), within a bound
            while time.monotonic() - start < SECONDS_PER_OPERATION or (
                    not _met_both(statuses.get(name, Counter()), name)
                    and time.monotonic() - start < MAX_SECONDS_PER_OPERATION):
                op()
    finally:
        (tmp_path / "stop").touch()
        out, err = adversary.communicate(timeout=30)
    assert adversary.returncode == 0, err.decode()
    swaps, how = out.decode().split()
    assert int(swaps) > 1000, "the adversary barely ran: %s swaps (%s)" % (swaps, how)

    assert leaks == [], leaks
    assert _state(outside) == before  # nothing outside created, changed or removed
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(projects))) == (
        sorted(around[0] + ["stop"]), around[1])
    # the race was really run: the same requests met the real entries and the links
    for op in MUST_MEET_BOTH:
        assert _met_both(statuses[op], op), statuses


MUST_MEET_BOTH = ("read", "download", "write", "mkdir", "upload", "list", "archive")


def _met_both(seen: Counter, op: str) -> bool:
    return op not in MUST_MEET_BOTH or (seen[200] + seen[201] > 0 and seen[409] > 0)
