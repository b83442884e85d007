"""`saereg validate`: markup in a release file's text fields.

The generated docs escape every value (publish/markdown_text.py), so markup never runs;
but a pull request that puts HTML, a script URL or markdown link syntax into a
publisher, description, license, dataset or link is either a mistake or an attack, and a
reviewer should see it named. Links must be plain http(s) URLs: no quotes, angle
brackets, backticks, backslashes or whitespace that could end an attribute or a link.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

#: An HTML tag, comment, declaration or processing instruction; a character reference;
#: markdown link/image syntax; a kramdown attribute list or extension; a script scheme.
_MARKUP = re.compile(
    r"<[A-Za-z!/?]|&#?\w+;|\]\s*\(|\]\s*\[|\{:|\{::|"
    r"\b(?:javascript|vbscript|data)\s*:",
    re.IGNORECASE,
)
_URL_BAD = re.compile(r"[\s\"'<>`\\{}|^]")
#: Keys whose values are links.
LINK_KEYS = ("links",)


def markup_in(value: str) -> str | None:
    """The first markup-like snippet in `value`, or None."""
    m = _MARKUP.search(value)
    return value[max(0, m.start() - 10) : m.end() + 10] if m else None


def url_problem(value: Any) -> str | None:
    """Why `value` is not a plain http(s) URL, or None."""
    if not isinstance(value, str):
        return "is not a string"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL"
    bad = _URL_BAD.search(value)
    if bad:
        return f"contains {bad.group()!r}, which could end a link in the generated docs"
    return None


def _strings(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*path, i))


def text_problems(doc: Mapping[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """(JSON path, message) for every link that is not a plain http(s) URL and every
    other text value that holds markup."""
    out = []
    for path, value in _strings(doc, ()):
        if path[:1] == LINK_KEYS:
            why = url_problem(value)
            if why:
                out.append((path, f"link {value[:80]!r} {why}"))
            continue
        snippet = markup_in(value)
        if snippet is not None:
            out.append(
                (
                    path,
                    f"holds markup ({snippet!r}); text fields are shown as plain text, "
                    "write them without HTML, markdown links or script URLs",
                )
            )
    return out
