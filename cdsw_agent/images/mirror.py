"""Find the Debian mirror this host's apt already uses, so debootstrap fetches from the same place.

Both apt source formats are read: one-line `deb URI SUITE COMPONENTS` (sources.list, *.list) and
deb822 stanzas (*.sources). Nothing is hard-coded: a host whose apt has no Debian entry must be
given a mirror (`--mirror` or the engine_debian_mirror setting).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from ..errors import UserError

# Release code names only: vendor repositories often call their own suites "stable".
DEBIAN_CODENAMES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid"}


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple
    components: tuple
    origin: str  # file it came from


def _one_line_sources(text: str, origin: str) -> Iterable[AptSource]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...] options
        parts = line.split()
        if len(parts) >= 3:
            yield AptSource(parts[1], (parts[2],), tuple(parts[3:]), origin)


def _deb822_sources(text: str, origin: str) -> Iterable[AptSource]:
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip() or raw[0] in " \t":
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        for uri in fields.get("uris", "").split():
            yield AptSource(uri, tuple(fields.get("suites", "").split()),
                            tuple(fields.get("components", "").split()), origin)


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> List[AptSource]:
    """Every enabled `deb` source of the apt configuration under etc_apt."""
    found: List[AptSource] = []
    main = etc_apt / "sources.list"
    if main.is_file():
        found += _one_line_sources(main.read_text(errors="replace"), str(main))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix == ".list":
                found += _one_line_sources(f.read_text(errors="replace"), str(f))
            elif f.suffix == ".sources":
                found += _deb822_sources(f.read_text(errors="replace"), str(f))
    return found


def find_debian_mirror(suite: str, etc_apt: Path = Path("/etc/apt")) -> Optional[str]:
    """The URI apt uses for `suite` (a `main` component, not security); failing that, the URI of
    any Debian release apt knows (it serves every suite). None when apt has no Debian source."""
    sources = [s for s in apt_sources(etc_apt) if "main" in s.components
               and "security" not in s.uri and not any(x.endswith("-security") for x in s.suites)]
    for s in sources:
        if suite in s.suites:
            return s.uri.rstrip("/")
    for s in sources:
        if any(x.split("-", 1)[0] in DEBIAN_CODENAMES for x in s.suites):
            return s.uri.rstrip("/")
    return None


def resolve_mirror(suite: str, option: str = "", setting: str = "",
                   etc_apt: Path = Path("/etc/apt")) -> str:
    """--mirror wins, then the setting, then what apt uses."""
    for value in (option, setting):
        if value:
            if not re.match(r"^(https?|file)://", value):
                raise UserError("Debian mirror %r is not a URL; expected e.g. http://HOST/debian" % value)
            return value.rstrip("/")
    found = find_debian_mirror(suite, etc_apt)
    if not found:
        raise UserError("no Debian mirror for %s in %s; pass --mirror http://HOST/debian or set "
                        "engine_debian_mirror" % (suite, etc_apt))
    return found
