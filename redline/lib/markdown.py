"""Markdown to HTML that is safe to put in a page.

Two layers, so a mistake in one is caught by the other:

1. Python-Markdown with its raw-HTML handling switched off: ``<script>`` or ``<img onerror>``
   written in the source comes out as escaped text, never as markup.
2. ``nh3`` (the Rust ``ammonia`` sanitiser) over the result, with an allow-list of tags and
   attributes and only ``http``, ``https`` and ``mailto`` links, which drops
   ``javascript:`` URLs and any attribute htmx or a browser would act on.
"""

from __future__ import annotations

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown.extensions import Extension

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "code",
    "em", "strong", "del", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}


class _EscapeHtml(Extension):
    """Treat raw HTML in the source as text (Python-Markdown's documented recipe)."""

    def extendMarkdown(self, md):  # noqa: N802 (Python-Markdown's API)
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")


def render_markdown(text: str) -> SafeString:
    """Render untrusted markdown to sanitised HTML, marked safe for templates."""
    html = markdown.markdown(
        text or "", extensions=[_EscapeHtml(), "fenced_code", "tables", "sane_lists"]
    )
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
    # Safe by construction: every tag and attribute passed nh3's allow-list just above.
    return mark_safe(clean)  # noqa: S308
