"""Filling a new project's folder: blank, from a built-in template, a git URL or an archive.

Work happens in a staging folder beside the projects; the caller renames it into
place only when the database row is safely written, so a failure leaves nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..security.ssh_keys import UserKey
from . import git_clone
from .storage import FileError, extract_archive

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "project_templates"


def templates() -> Dict[str, str]:
    """name -> one-line description (first line of the template's README)."""
    out = {}
    for d in sorted(TEMPLATES_DIR.iterdir()):
        if d.is_dir():
            readme = d / "README.md"
            first = readme.read_text(encoding="utf-8").splitlines()[0] if readme.exists() else d.name
            out[d.name] = first.lstrip("# ").strip()
    return out


def staging_dir(projects_dir: Path) -> Path:
    projects_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=str(projects_dir)))
    # mkdtemp makes it 0700; it becomes the project folder, which engines (another uid) read
    os.chmod(str(staging), 0o755)
    return staging


def from_template(dest: Path, name: str) -> None:
    source = TEMPLATES_DIR / name
    if name not in templates():
        raise FileError(422, "unknown template %r; choose one of %s" % (name, ", ".join(templates())))
    shutil.copytree(source, dest, dirs_exist_ok=True)


def from_git(dest: Path, url: str, allowed_schemes: List[str], *, allowed_hosts: str = "",
             ssh_key: Optional[UserKey] = None, master_hosts: Sequence[str] = ()) -> None:
    """Clone url into dest (an empty folder) under git_clone's rules (allowed schemes and hosts,
    never the master's own network, the user's own SSH key)."""
    git_clone.clone(dest, url, allowed_schemes=allowed_schemes, allowed_hosts=allowed_hosts,
                    ssh_key=ssh_key, master_hosts=master_hosts)


def from_archive(dest: Path, archive: Path, max_bytes: int) -> int:
    try:
        count = extract_archive(archive, dest, max_bytes)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise FileError(422, "the archive is damaged: %s" % e)
    _strip_single_top_folder(dest)
    return count


def _strip_single_top_folder(dest: Path) -> None:
    """An archive of one folder (project.zip -> project/...) becomes the project root."""
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        inner = entries[0]
        tmp = dest / (".unwrap-" + os.urandom(4).hex())
        os.rename(inner, tmp)
        for child in tmp.iterdir():
            os.rename(child, dest / child.name)
        tmp.rmdir()
