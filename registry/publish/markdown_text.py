"""Release-file text made inert in the generated markdown.

Release files arrive in contributors' pull requests, and the Pages workflow renders the
markdown with an engine that keeps raw HTML (Jekyll's kramdown), so every value from a
release file is text to show, never markup to run:

* `text` escapes what could start HTML (``<``, ``>``, ``&`` as entities) or markdown
  structure that reaches further than the value itself: links and images (``[`` ``]``),
  code spans (backticks), kramdown's attribute lists (``{`` ``}``), backslashes; line
  breaks become spaces (a line starting with ``<script`` would otherwise open an HTML
  block);
* `cell` is `text` for a table cell, where ``|`` also ends the cell;
* `url` returns a link target only for an http(s) URL with a host, with every character
  that could end the link's parentheses or quote an attribute percent-encoded; anything
  else is shown as text, not linked;
* `code` wraps a value in a code span whose fence no backtick in it can close.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BACKSLASHED = set("\\`[]{}")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
#: Characters a URL keeps as they are; the rest (spaces, quotes, brackets, angle
#: brackets, backticks, pipes, parentheses) are percent-encoded.
_URL_SAFE = "/:?#=&%@!$*+,;~-._"


def _escape_char(c: str) -> str:
    if c in _ENTITIES:
        return _ENTITIES[c]
    if c in _BACKSLASHED:
        return "\\" + c
    return c


#: Every per-character rule of `text` in one table for str.translate: other control
#: characters become spaces, then the escapes. (A Python call per character made
#: `saereg docs` twice as slow; the output is the same.)
_TRANSLATE = {
    **{c: " " for c in range(32) if c != 9},
    **{ord(c): _escape_char(c) for c in (*_ENTITIES, *_BACKSLASHED)},
}


_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


def text(value: object) -> str:
    """`value` as inline markdown text that renders as exactly these characters."""
    raw = str(value)
    if not raw.isprintable():  # every line break is unprintable: most values skip the regex
        raw = _LINE_BREAKS.sub(" ", raw)
    return raw.translate(_TRANSLATE)


def paragraphs(value: object) -> str:
    """A multi-paragraph text field (a description): paragraphs kept, each made inert."""
    parts = re.split(r"\n\s*\n", str(value).strip())
    return "\n\n".join(text(p) for p in parts if p.strip())


def cell(value: object) -> str:
    """`value` for a markdown table cell."""
    return text(value).replace("|", "\\|")


def url(value: object) -> str | None:
    """A safe link target for `value`, or None when it is not an http(s) URL with a host."""
    if not isinstance(value, str):
        return None
    raw = value.strip()
    try:
        parts = urlsplit(raw)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if _URL_FORBIDDEN.search(raw):  # spaces and control characters
        return None
    return quote(raw, safe=_URL_SAFE)


def link(label: str, target: object) -> str:
    """``[label](target)`` for an http(s) target; otherwise the target shown as text.
    `label` must already be markdown (escaped by the caller)."""
    safe = url(target)
    if safe is None:
        return f"{label} ({text(target)})" if target else label
    return f"[{label}]({safe})"


def code(value: object) -> str:
    """`value` in a code span (inside which nothing is markup) on one line."""
    flat = _LINE_BREAKS.sub(" ", str(value))
    longest = max((len(m) for m in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"
