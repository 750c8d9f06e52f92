"""Versioned bundles of the Hadoop client configuration a cluster manager deploys on a gateway.

`collect()` copies the source directories (Cloudera Manager: the role's hadoop-conf, yarn-conf,
hive-conf, spark-conf dependency dirs; Ambari: /etc/hadoop/conf, /etc/hive/conf, /etc/spark2/conf)
into ``BUNDLES_DIR/<version>/<kind>/``, where the version is a hash of the copied content: the
same configuration always gives the same bundle, on every gateway. ``BUNDLES_DIR/current`` is a
symlink to the bundle new engines get; older bundles are pruned, never the current one.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import UserError
from ..settings import Settings

KINDS = ("hadoop", "yarn", "hive", "spark")
KEEP_BUNDLES = 5  # bundles kept besides the current one and those engines still use
MANIFEST = "manifest.json"
CURRENT = "current"
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 3600  # a temp dir this old was left by a collect that died
VERSION_LENGTH = 16  # hex digits of the sha256 kept as the version

# Never copied: credentials and server-side secrets have no place in a user's engine, and Cloudera
# Manager's bookkeeping files change on every deploy without changing the configuration.
EXCLUDE = ("*.keytab", "*.jceks", "ssl-server.xml", "container-executor.cfg",
           "taskcontroller.cfg", "__cloudera_*", ".*", "*~", "*.swp")

# Cloudera Manager names a dependency's client-config dir "<service>-conf".
_CM_DIR = re.compile(r"^(hadoop|hdfs|yarn|hive|spark\d?(?:_on_yarn)?)-conf$")
_SPARK_FILES = {"spark-defaults.conf", "spark-env.sh"}
_HADOOP_FILES = {"core-site.xml", "hdfs-site.xml"}


@dataclass(frozen=True)
class Bundle:
    version: str
    path: Path
    kinds: Tuple[str, ...]
    files: Dict[str, str]  # "kind/relative/path" -> sha256
    sources: Dict[str, str]  # kind -> source directory
    created: str  # ISO 8601, UTC
    reused: bool = False  # collect() found this content already bundled
    skipped: Tuple[str, ...] = field(default=())  # sources that hold no known configuration

    @property
    def created_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.created)

    def dir(self, kind: str) -> Path:
        return self.path / kind

    @classmethod
    def load(cls, path: Path) -> "Bundle":
        try:
            doc = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            bundle = cls(version=doc["version"], path=path, kinds=tuple(doc["kinds"]),
                         files=dict(doc["files"]), sources=dict(doc["sources"]),
                         created=doc["created"])
            bundle.created_at  # noqa: B018 -- a bad date is a damaged manifest
            return bundle
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError("client configuration bundle %s has no readable %s (%s); run "
                            "`cdsw client-config collect` again" % (path, MANIFEST, e)) from None


def bundles_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "client-config"


# --- detection ---------------------------------------------------------------------------------

def detect_kinds(source: Path) -> List[str]:
    """The kinds of configuration a directory holds, from its Cloudera Manager name or its files.

    Spark and Hive directories carry copies of the Hadoop site files, so their own files decide."""
    m = _CM_DIR.match(source.name)
    if m:
        name = m.group(1)
        return ["spark" if name.startswith("spark") else "hadoop" if name == "hdfs" else name]
    names = {p.name for p in source.iterdir() if p.is_file()}
    if names & _SPARK_FILES:
        return ["spark"]
    if "hive-site.xml" in names:
        return ["hive"]
    kinds = []
    if names & _HADOOP_FILES:
        kinds.append("hadoop")
    if "yarn-site.xml" in names:
        kinds.append("yarn")  # Ambari's /etc/hadoop/conf holds both
    return kinds


def assign_sources(sources: Sequence[Path]) -> Tuple[Dict[str, Path], List[str]]:
    """Map each kind to the one source holding it; sources holding none are returned as skipped."""
    by_kind: Dict[str, Path] = {}
    skipped: List[str] = []
    for source in sources:
        if not source.is_dir():
            raise UserError("client configuration directory %s does not exist; deploy the client "
                            "configuration or fix hadoop_conf_dirs" % source)
        try:
            kinds = detect_kinds(source)
        except PermissionError:
            raise UserError("client configuration directory %s is not readable by this user"
                            % source) from None
        if not kinds:
            skipped.append("%s (no core-site.xml, yarn-site.xml, hive-site.xml or "
                           "spark-defaults.conf)" % source)
        for kind in kinds:
            if kind in by_kind:
                raise UserError("both %s and %s hold the %s client configuration; list only one"
                                % (by_kind[kind], source, kind))
            by_kind[kind] = source
    if not by_kind:
        raise UserError("no Hadoop, YARN, Hive or Spark client configuration in %s"
                        % ", ".join(str(s) for s in sources))
    return by_kind, skipped


# --- copying -----------------------------------------------------------------------------------

def _excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDE)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_xml(data: bytes, shown: Path) -> None:
    """Raise a UserError naming the file and line when data is not well-formed XML."""
    try:
        ET.fromstring(data)
    except ET.ParseError as e:
        line = e.position[0] if getattr(e, "position", None) else 0
        what = str(e).split(":")[0]
        raise UserError("%s line %d: not well-formed XML (%s); fix the file or redeploy the "
                        "client configuration" % (shown, line, what)) from None


def copy_tree(source: Path, target: Path) -> None:
    """Copy a configuration directory: regular files only, symlinks dereferenced but only within
    source, *.xml checked, secrets and bookkeeping files left out (see EXCLUDE)."""
    root = os.path.realpath(source)
    target.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _excluded(d))
        rel_dir = os.path.relpath(dirpath, root)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames) + links:
            if _excluded(name):
                continue
            path = os.path.join(dirpath, name)
            shown = Path(source, rel_dir, name) if rel_dir != "." else Path(source, name)
            real = os.path.realpath(path)
            if os.path.islink(path):
                if not _inside(real, root):
                    raise UserError("%s is a symlink to %s, outside %s; copy the file into the "
                                    "client configuration directory instead"
                                    % (shown, real, source))
                if not os.path.exists(real):
                    raise UserError("%s is a broken symlink (to %s); fix or remove it"
                                    % (shown, real))
                if os.path.isdir(real):
                    continue  # its files are copied from where they really are
            try:
                mode = os.stat(real).st_mode
                if not stat.S_ISREG(mode):
                    continue  # sockets, fifos, devices
                with open(real, "rb") as f:
                    data = f.read()
            except PermissionError:
                raise UserError("%s is not readable by this user; make it readable (mode 0644) "
                                "or remove it" % shown) from None
            if name.endswith(".xml"):
                check_xml(data, shown)
            out = target / rel_dir / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            os.chmod(out, 0o755 if mode & stat.S_IXUSR else 0o644)


def tree_files(root: Path) -> Dict[str, str]:
    """Relative path -> sha256 of every file under root (the manifest excluded)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != MANIFEST:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def version_of(files: Dict[str, str]) -> str:
    """sha256 over the sorted relative paths and the (hashed) bytes of every file."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(b"%s\0%s\n" % (rel.encode("utf-8"), files[rel].encode("ascii")))
    return h.hexdigest()[:VERSION_LENGTH]


# --- bundles -----------------------------------------------------------------------------------

def collect(sources: Sequence[Path], bundles_root: Path, keep: int = KEEP_BUNDLES,
            in_use: Iterable[str] = ()) -> Bundle:
    """Bundle the sources, make the bundle current and prune old ones; see the module docstring.

    Nothing is left behind on error: the bundle is built in a temp dir and renamed into place."""
    by_kind, skipped = assign_sources([Path(s) for s in sources])
    bundles_root.mkdir(parents=True, exist_ok=True)
    tmp = bundles_root / (TMP_PREFIX + secrets.token_hex(6))
    try:
        for kind in KINDS:
            if kind in by_kind:
                copy_tree(by_kind[kind], tmp / kind)
        files = tree_files(tmp)
        version = version_of(files)
        final = bundles_root / version
        reused = _loadable(final)
        if not reused:
            if final.exists():  # damaged (manifest lost): rebuilt from this copy
                shutil.rmtree(final)
            now = dt.datetime.now(dt.timezone.utc)
            manifest = {"version": version, "kinds": [k for k in KINDS if k in by_kind],
                        "files": files,
                        "sources": {k: str(v) for k, v in sorted(by_kind.items())},
                        "created": now.isoformat(timespec="microseconds")}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            os.chmod(tmp / MANIFEST, 0o644)
            for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
                os.chmod(d, 0o755)  # engines read it as another user, whatever the umask
            try:
                os.rename(tmp, final)
            except OSError:
                if not _loadable(final):  # not a concurrent collect of the same content
                    raise
                reused = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    set_current(bundles_root, version)
    prune(bundles_root, keep, in_use)
    return replace(Bundle.load(final), reused=reused, skipped=tuple(skipped))


def _loadable(path: Path) -> bool:
    try:
        Bundle.load(path)
        return True
    except UserError:
        return False


def set_current(bundles_root: Path, version: str) -> None:
    link = bundles_root / (TMP_PREFIX + "current-" + secrets.token_hex(4))
    os.symlink(version, link)
    os.replace(link, bundles_root / CURRENT)


def current_version(bundles_root: Path) -> Optional[str]:
    try:
        return os.readlink(bundles_root / CURRENT)
    except OSError:
        return None


def current(bundles_root: Path) -> Optional[Bundle]:
    version = current_version(bundles_root)
    return Bundle.load(bundles_root / version) if version else None


def list_bundles(bundles_root: Path) -> List[Bundle]:
    """Every complete bundle, newest first."""
    out = []
    if bundles_root.is_dir():
        for d in bundles_root.iterdir():
            if d.is_dir() and not d.is_symlink() and not d.name.startswith(TMP_PREFIX) \
                    and (d / MANIFEST).exists():
                try:
                    out.append(Bundle.load(d))
                except UserError:
                    continue  # a damaged bundle is neither shown nor used
    return sorted(out, key=lambda b: (b.created_at, b.version), reverse=True)


def prune(bundles_root: Path, keep: int = KEEP_BUNDLES, in_use: Iterable[str] = ()) -> List[str]:
    """Delete all but the newest `keep` bundles, never the current one nor those in_use (versions
    running engines mount); also clears temp dirs left by a collect that died. Returns what went."""
    protected = set(in_use) | {current_version(bundles_root) or ""}
    removed = []
    for bundle in list_bundles(bundles_root)[max(keep, 0):]:
        if bundle.version not in protected:
            shutil.rmtree(bundle.path, ignore_errors=True)
            removed.append(bundle.version)
    cutoff = time.time() - STALE_TMP_SECONDS
    for d in bundles_root.glob(TMP_PREFIX + "*"):
        try:
            if d.lstat().st_mtime < cutoff:
                d.unlink() if d.is_symlink() else shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass
    return removed
