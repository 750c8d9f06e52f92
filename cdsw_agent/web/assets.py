"""Where the pages' static files come from: our own CSS/JS in the package, and the browser
libraries that `npm ci` installs next to package.json (git-ignored, never committed)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
VENDOR_DIR = WEB_DIR / "node_modules"

# URL path under /vendor -> what it is; the pages check these before loading them
VENDOR_FILES: Dict[str, str] = {
    "codemirror/lib/codemirror.js": "CodeMirror (code editor)",
    "codemirror/lib/codemirror.css": "CodeMirror styles",
    "@xterm/xterm/lib/xterm.js": "xterm.js (session terminal)",
    "@xterm/xterm/css/xterm.css": "xterm.js styles",
    "@xterm/addon-fit/lib/addon-fit.js": "xterm.js fit addon",
}
# CodeMirror modes the workbench loads up front: it opens any project file without a reload
WORKBENCH_MODES = ("python", "r", "clike", "shell", "markdown", "yaml", "sql", "javascript")
# file extension -> (CodeMirror mode script, mode spec) for syntax highlighting
EDITOR_MODES: Dict[str, Tuple[str, str]] = {
    ".py": ("python", "python"), ".r": ("r", "r"), ".scala": ("clike", "text/x-scala"),
    ".java": ("clike", "text/x-java"), ".c": ("clike", "text/x-csrc"),
    ".sh": ("shell", "shell"), ".bash": ("shell", "shell"), ".md": ("markdown", "markdown"),
    ".yml": ("yaml", "yaml"), ".yaml": ("yaml", "yaml"), ".sql": ("sql", "text/x-sql"),
    ".js": ("javascript", "javascript"), ".json": ("javascript", "application/json"),
    ".xml": ("xml", "xml"), ".html": ("xml", "text/html"), ".css": ("css", "css"),
}
INSTALL_HINT = "run `npm ci` in %s (scripts/ci/setup_host.sh and scripts/standalone.sh do)" % WEB_DIR


def missing_vendor_files() -> List[str]:
    """Vendor files that are not installed; pages fall back and say so when this is not empty."""
    return [rel for rel in VENDOR_FILES if not (VENDOR_DIR / rel).is_file()]


def editor_mode(filename: str) -> Tuple[str, str]:
    """(mode script under /vendor, mode spec) for a file, or ("", "") for plain text or when
    the mode's script is not installed."""
    script, spec = EDITOR_MODES.get(Path(filename).suffix.lower(), ("", ""))
    if not script:
        return "", ""
    rel = "codemirror/mode/%s/%s.js" % (script, script)
    return (rel, spec) if (VENDOR_DIR / rel).is_file() else ("", "")
