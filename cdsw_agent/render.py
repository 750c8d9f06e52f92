"""Every rendered file comes from a jinja2 template with StrictUndefined."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List

import jinja2

from . import __version__
from .settings import SETTINGS, Settings, masked

TEMPLATES = Path(__file__).parent / "templates"


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def template_names() -> List[str]:
    return sorted(p.name for p in TEMPLATES.glob("*.j2"))


def render_context(settings: Settings, reveal_secrets: bool = False) -> Dict[str, Any]:
    values = {s.name: (s.render(settings.as_dict()[s.name]) if reveal_secrets
                       else masked(s, settings.as_dict()[s.name])) for s in SETTINGS}
    return {"version": __version__, "settings_list": SETTINGS, "values": values, "s": settings}


def render(name: str, settings: Settings, reveal_secrets: bool = False, **extra: Any) -> str:
    context = render_context(settings, reveal_secrets)
    context.update(extra)
    return environment().get_template(name).render(**context)


def render_all(settings: Settings, out_dir: Path, reveal_secrets: bool = False) -> List[Path]:
    """Render every template into out_dir atomically (each file written then renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = {name[:-3]: render(name, settings, reveal_secrets) for name in template_names()}
    written = []
    for filename, text in rendered.items():
        target = out_dir / filename
        tmp = target.with_name("." + filename + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o600 if reveal_secrets else 0o644)
        os.replace(tmp, target)
        written.append(target)
    return written
