"""The repository is self-contained: no file points at documents outside it (a clone on a new
machine has nothing beside it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/(reference|design|tools)\b|\bdesign\.md\b")


def test_no_file_points_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    offenders = []
    for name in files:
        path = ROOT / name
        if name.endswith((".png", ".jar", ".gz", ".ico")) or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += ["%s:%d" % (name, text.count("\n", 0, m.start()) + 1)
                      for m in OUTSIDE.finditer(text)]
    assert not offenders, "references to files outside the repository: %s" % offenders


def test_architecture_document_exists_and_the_readme_links_it() -> None:
    assert (ROOT / "docs" / "architecture.md").is_file()
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
