"""A release file is untrusted input: its text must stay text in every generated page.

The markdown is rendered as the Pages workflow publishes it (an engine that keeps raw
HTML: markdown-it with `html` on, GFM tables) and opened in the real Chromium, next to
catalogue.html; no payload may run, create an element, or become a non-http(s) link.
`saereg validate` names every payload.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from saereg.catalogue.release_files import read_release_file
from saereg.publish import docs

from ..browser import INSTALL_HINT, Browser, find_chromium
from ..publishers import release_yaml
from .probe import Score, run_cli

RUN = "window.__ran=(window.__ran||0)+1"
PAYLOADS = {
    "publisher": f'Evil <img src=x onerror="{RUN}"> Corp | split\nsecond line',
    "description": (
        f'Line one.\n<script>{RUN}</script>\n\n<div onmouseover="{RUN}">x</div>'
        f' [click](javascript:{RUN}) ![i](x) {{: onclick="{RUN}"}} ` `` <!-- c -->'
    ),
    "license": f'<svg onload="{RUN}">MIT</svg>',
}
#: Links the schema lets through (http(s), no whitespace) that would break out of a link.
LINKS = {
    "model": f'https://example.com/"><script>{RUN}</script>',
    "publication": f"https://example.com/a)<img/src=x/onerror={RUN}>",
    "code": f"https://example.com/`<svg/onload={RUN}>`",
}
DATASET = f'<iframe src="javascript:{RUN}"></iframe>|x'


def _hostile_release() -> str:
    doc = yaml.safe_load(
        release_yaml(
            "hostile-docs",
            "saelens",
            [
                {
                    "id": "blocks.3.hook_resid_pre",
                    "path": "blocks.3.hook_resid_pre",
                    "hook_name": "blocks.3.hook_resid_pre",
                    "hook_layer": 3,
                    "d_sae": 16,
                    "dataset": DATASET,
                }
            ],
            repo_id="test-org/hostile-docs",
            model="gpt2-small",
        )
    )
    doc.update(PAYLOADS)
    doc["links"] = LINKS
    return yaml.safe_dump(doc, sort_keys=False)


def _render(markdown: str) -> str:
    engine = MarkdownIt("commonmark", {"html": True}).enable("table")
    return f"<!doctype html><meta charset=utf-8><body>{engine.render(markdown)}</body>"


PROBE_JS = """(() => {
  const all = [...document.querySelectorAll('*')];
  const handlers = all.filter(e => [...e.attributes].some(a => a.name.startsWith('on')));
  const bad = [...document.querySelectorAll('a[href], img[src], iframe, script, svg, object,'
    + ' embed')].filter(e => {
      if (e.tagName === 'A') return !/^(https?:|models\\/|\\.\\.\\/|[a-z_.-]+\\.(md|html))/i
        .test(e.getAttribute('href'));
      return true;
  });
  return {ran: window.__ran || 0, handlers: handlers.length,
          bad: bad.map(e => e.outerHTML.slice(0, 120))};
})()"""


def test_generated_markdown_is_inert_in_chromium(hubenv, tmp_path) -> None:
    score = Score("generated docs")
    if find_chromium() is None:
        pytest.fail(f"the generated-docs test needs a browser: {INSTALL_HINT}", pytrace=False)
    release = hubenv.add_release("hostile-docs", _hostile_release())
    out = tmp_path / "docs"
    # What `saereg docs` writes, for this release alone (the whole catalogue takes seconds
    # to render and shows nothing more here).
    written = docs.write(docs.generate([read_release_file(release)]), out)
    score.check("docs writes the pages", "pretrained_saes.md" in written, str(written))
    pages = {
        "pretrained_saes.md": out / "pretrained_saes.md",
        "model page": out / "models" / "gpt2-small.md",
    }
    rendered = {}
    for what, page in pages.items():
        text = page.read_text(encoding="utf-8")
        section = text[text.index("## [hostile-docs]") :]
        section = section[: (section.find("\n## ", 5) + 1) or None]
        score.check(f"{what}: no raw '<' from the release", "<" not in section, section[:400])
        rows = [ln for ln in section.splitlines() if ln.startswith("| blocks.3")]
        score.check(f"{what}: the SAE row keeps its 7 cells", len(rows) == 1, str(rows))
        html = tmp_path / f"{page.stem}.html"
        html.write_text(_render(text), encoding="utf-8")
        rendered[what] = html
    with Browser() as browser:
        for what, html in {**rendered, "catalogue.html": out / "catalogue.html"}.items():
            browser.open(html.as_uri() + ("#release=hostile-docs" if "." in what else ""))
            if what == "catalogue.html":
                page_text = browser.eval("document.body.innerText")
                score.check("catalogue.html shows the hostile row", "Evil" in page_text)
            found = browser.eval(PROBE_JS)
            score.check(f"{what}: no payload ran", found["ran"] == 0, str(found))
            score.check(f"{what}: no event-handler attribute", found["handlers"] == 0, str(found))
            if what != "catalogue.html":
                score.check(f"{what}: only http(s) links, no embeds", not found["bad"], str(found))
                body = browser.eval("document.body.innerText")
                for field, value in PAYLOADS.items():
                    first = value.split("\n")[0][:20]
                    score.check(f"{what}: {field} shown as text", first in body, first)
    # validate names the markup in every text field and every non-http(s) or unsafe link.
    result = run_cli("validate", str(release), "--no-hints", "--standalone")
    score.check("validate fails the file", result.rc == 1, result.out[-300:])
    for field in [*PAYLOADS, *(f"links.{k}" for k in LINKS), "saes[0].dataset"]:
        shown = re.search(rf"\$\.{re.escape(field)}\b.*(markup|link)", result.out)
        score.check(f"validate flags {field}", shown is not None, result.out[-600:])
    score.done()


def test_a_clean_release_passes_the_markup_lint(tmp_path: Path) -> None:
    score = Score("generated docs")
    clean = yaml.safe_load(
        release_yaml(
            "clean-docs",
            "saelens",
            [
                {
                    "id": "a",
                    "path": "a",
                    "hook_name": "blocks.1.hook_resid_pre",
                    "hook_layer": 1,
                    "d_sae": 16,
                }
            ],
            repo_id="o/r",
            model="gpt2-small",
        )
    )
    clean["description"] = "Trained with x < y and a & b; see https://example.com/p?q=1&r=2."
    clean["links"] = {"code": "https://github.com/o/r/tree/main/sae_(v2)"}
    path = tmp_path / "clean-docs.yaml"
    path.write_text(yaml.safe_dump(clean), encoding="utf-8")
    result = run_cli("validate", str(path), "--no-hints", "--standalone")
    score.check("plain text with '<' and '&' is not markup", result.rc == 0, result.out[-400:])
    score.done()
