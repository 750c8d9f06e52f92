"""Filling a new project's folder: blank, from a built-in template, a git URL or an archive.

Work happens in a staging folder beside the projects; the caller renames it into
place only when the database row is safely written, so a failure leaves nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List
from urllib.parse import urlparse

from .storage import FileError, extract_archive

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "project_templates"
GIT_TIMEOUT_SECONDS = 600
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/].*|^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:/.*")


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


def git_scheme(url: str) -> str:
    if _SCP_LIKE.match(url):
        return "ssh"
    return urlparse(url).scheme.lower()


def from_git(dest: Path, url: str, allowed_schemes: List[str]) -> None:
    """Clone url into dest (an empty folder). Only allowed URL schemes; no prompts; bounded time."""
    if url.startswith("-") or "\n" in url or "\x00" in url:
        raise FileError(422, "git_url is not a valid URL")
    scheme = git_scheme(url)
    if scheme not in allowed_schemes:
        raise FileError(422, "git URLs with scheme %r are not allowed here (allowed: %s)"
                        % (scheme or "none", ", ".join(allowed_schemes)))
    git = shutil.which("git")
    if git is None:
        raise FileError(503, "git is not installed on the master; install it (apt-get install git)")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/false",
               GIT_ALLOW_PROTOCOL=":".join(allowed_schemes), GIT_CONFIG_NOSYSTEM="1",
               GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new")
    try:
        proc = subprocess.run([git, "clone", "--quiet", "--depth", "1", "--", url, str(dest)],
                              env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FileError(504, "git clone took longer than %d s; check the URL" % GIT_TIMEOUT_SECONDS)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else "exit code %d" % proc.returncode
        raise FileError(422, "git clone failed: %s" % reason.replace("fatal: ", ""))


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
