"""README rendering: CommonMark plus tables, with raw HTML switched off so a project's README
cannot inject markup or scripts into the page (markdown-it also refuses javascript:/data: links)."""

from __future__ import annotations

from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}) \
    .enable("table").enable("strikethrough")


def render_markdown(text: str) -> str:
    """Safe HTML for the given markdown source."""
    return _md.render(text)
