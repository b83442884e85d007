"""docs/catalogue.html in a real headless Chromium: filters agree with `saereg list`, the
state lives in the URL, sorting, the layer × width grid, copy buttons, links, no-JS notice.

The browser is Debian's `chromium` package (README's test command installs it); without it
these tests fail, they never skip. One browser serves the whole module.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from saereg import cli
from saereg.catalogue.index import load_index
from saereg.catalogue.records import Release, SAEEntry
from saereg.catalogue.release_dirs import builtin_release_dir
from saereg.catalogue.release_files import read_releases
from saereg.publish.catalogue_page import render
from saereg.publish.docs import generate, stale_files

from .browser import INSTALL_HINT, Browser, find_chromium
from .conftest import REPO

PAGE = REPO / "docs" / "catalogue.html"
PAGE_SIZE = 100


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if find_chromium() is None:
        pytest.fail(f"the catalogue page tests need a browser: {INSTALL_HINT}", pytrace=False)
    with Browser(width=1280, height=900) as b:
        yield b


@functools.cache
def _listed(args: tuple[str, ...]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["list", *args, "--json"]) == 0
    return out.getvalue()


def listed(*args: str) -> list[dict[str, Any]]:
    """The same query through the command line, `saereg list ARGS --json` (run in this
    process: the browser tests should take seconds, not a process start per query)."""
    return json.loads(_listed(args))


def refs(records: list[dict[str, Any]]) -> set[str]:
    return {f"{r['release']}/{r['id']}" for r in records}


def open_page(b: Browser, fragment: str = "") -> None:
    b.open(PAGE.as_uri() + fragment)
    assert b.eval("document.documentElement.hasAttribute('data-ready')")


def set_field(b: Browser, name: str, value: str) -> None:
    """Change one filter as a person would: choose an option, or type into the input."""
    kind = b.eval(f"document.getElementById('f-{name}').tagName")
    if kind == "SELECT":
        options = b.eval(f"[...document.getElementById('f-{name}').options].map(o => o.value)")
        assert value in options, (name, value)
        b.eval(
            f"(() => {{ const el = document.getElementById('f-{name}'); el.focus();"
            f" el.value = {json.dumps(value)};"
            " el.dispatchEvent(new Event('change', {bubbles: true})); })()"
        )
    else:  # empty the input, then type (an emptied input announces itself as typing would)
        b.eval(
            f"(() => {{ const el = document.getElementById('f-{name}'); el.value = '';"
            " el.focus(); el.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )
        if value:
            b.type_text(value)


def shown(b: Browser, url: bool = False) -> dict[str, Any]:
    """The match count and the references of the rows on screen; with `url`, also the
    URL's fragment once the page has written it (200 ms after the last change)."""
    return b.eval(
        f"""new Promise(done => setTimeout(() => done({{
          count: +document.getElementById('count').dataset.count,
          refs: [...document.querySelectorAll('#rows button.copy')].map(e => e.dataset.ref),
          hash: location.hash,
        }}), {250 if url else 0}))"""
    )


def assert_same(b: Browser, expected: set[str]) -> dict[str, Any]:
    got = shown(b)
    assert got["count"] == len(expected)
    assert len(got["refs"]) == min(PAGE_SIZE, len(expected))
    assert set(got["refs"]) <= expected
    if len(expected) <= PAGE_SIZE:
        assert set(got["refs"]) == expected
    return got


def test_page_opens_from_docs_with_every_sae_and_draws_something(browser: Browser) -> None:
    everything = listed()
    open_page(browser)
    assert_same(browser, refs(everything))
    assert browser.eval("document.title").startswith("Pretrained SAEs")
    assert browser.eval("document.querySelectorAll('#results thead th').length") == 9
    png = browser.screenshot()
    stats = browser.image_stats(png)
    assert (stats["width"], stats["height"]) == (1280, 900)
    assert stats["colours"] > 50 and stats["ink"] > 0.05, stats  # text, table, filters drawn
    assert browser.page_errors() == []


def test_filters_combine_and_agree_with_saereg_list(browser: Browser) -> None:
    open_page(browser)
    # Gemma 2 2B, layer 12, 16k wide: exactly what `saereg list` returns for the same query.
    set_field(browser, "model", "gemma-2-2b")
    set_field(browser, "layer_min", "12")
    set_field(browser, "layer_max", "12")
    set_field(browser, "width", "16384")
    want = listed("--model", "gemma-2-2b", "--layer", "12", "--width", "16k")
    assert want
    assert_same(browser, refs(want))

    # ... residual stream only (transcoders read the MLP input and are a site of their own),
    # L0 between 40 and 100, and free text over "release/id".
    set_field(browser, "site", "resid_post")
    set_field(browser, "l0_min", "40")
    set_field(browser, "l0_max", "100")
    set_field(browser, "q", "Gemma-Scope RES")
    resid = listed(
        "--model", "gemma-2-2b", "--layer", "12", "--width", "16k", "--hook", "*hook_resid_post"
    )
    want = [
        r
        for r in resid
        if "transcoder" not in (r["architecture"] or "")
        and r["l0"] is not None
        and 40 <= r["l0"] <= 100
        and all(t in f"{r['release']}/{r['id']}".lower() for t in ("gemma-scope", "res"))
    ]
    assert 0 < len(want) < len(resid)
    assert_same(browser, refs(want))

    # Publisher, format and architecture (publisher from the catalogue index, as `saereg info`).
    browser.eval("document.getElementById('clear').click()")
    releases = load_index().releases
    set_field(browser, "publisher", "OpenAI")
    set_field(browser, "arch", "topk")
    set_field(browser, "layer_min", "6")
    openai = [r for r in listed() if releases[r["release"]]["publisher"] == "OpenAI"]
    want = [r for r in openai if r["architecture"] == "topk" and (r["hook_layer"] or -1) >= 6]
    assert want
    assert_same(browser, refs(want))
    set_field(browser, "format", "oai")
    oai_format = refs(listed("--format", "oai"))
    assert_same(browser, refs(want) & oai_format)
    set_field(browser, "layer_min", "")
    set_field(browser, "format", "")
    set_field(browser, "arch", "")
    assert_same(browser, refs(openai))
    set_field(browser, "q", "no such sae anywhere")
    assert shown(browser)["count"] == 0
    assert "No SAE matches" in browser.eval("document.getElementById('rows').textContent")
    assert browser.page_errors() == []


def test_filter_state_round_trips_through_the_url(browser: Browser) -> None:
    open_page(browser)
    set_field(browser, "model", "gpt2-small")
    set_field(browser, "site", "resid")
    set_field(browser, "q", "jb")
    browser.eval("document.querySelector('th[data-sort=\"layer\"] button').click()")
    browser.eval("document.querySelector('th[data-sort=\"layer\"] button').click()")
    before = shown(browser, url=True)
    fragment = before["hash"]
    assert "model=gpt2-small" in fragment and "sort=layer" in fragment and "dir=desc" in fragment
    want = [
        r
        for r in listed("--model", "gpt2-small", "--hook", "*hook_resid_*")
        if "jb" in f"{r['release']}/{r['id']}".lower()
    ]
    assert before["count"] == len(want)

    # A shared link opens the same view: form values, order and rows.
    browser.open("about:blank")
    open_page(browser, fragment)
    after = shown(browser)
    assert after["refs"] == before["refs"] and after["count"] == before["count"]
    form = browser.eval(
        "({m: document.getElementById('f-model').value, s: document.getElementById('f-site').value,"
        " q: document.getElementById('f-q').value,"
        " sort: document.querySelector('th[aria-sort]').dataset.sort,"
        " dir: document.querySelector('th[aria-sort]').getAttribute('aria-sort')})"
    )
    assert form == dict(m="gpt2-small", s="resid", q="jb", sort="layer", dir="descending")
    layers = [r["hook_layer"] for r in want]
    first = browser.eval("document.querySelector('#rows tr td.num').textContent")
    assert int(first) == max(layers)

    # Editing the URL (or going back) re-applies it; paging is part of the state too.
    browser.eval("location.hash = '#width=16384&page=2'")
    browser.eval("new Promise(r => setTimeout(r, 50))")
    state = shown(browser, url=True)
    assert state["count"] == len(listed("--width", "16k"))
    assert "page=2" in state["hash"]
    assert browser.eval("document.getElementById('f-model').value") == ""
    assert "page 2 of" in browser.eval("document.getElementById('page-label').textContent")
    # Any alias of a model selects the model, as `saereg list --model` reads it.
    open_page(browser, "#model=gpt2")
    assert browser.eval("document.getElementById('f-model').value") == "gpt2-small"
    assert shown(browser)["count"] == len(listed("--model", "gpt2"))
    # A value no list offers (an old link, a typo) is shown as unknown and matches nothing,
    # never every row while the list says "any".
    open_page(browser, "#model=no-such-model&width=16384")
    assert shown(browser)["count"] == 0
    assert browser.eval("document.getElementById('f-model').value") == "no-such-model"
    text = browser.eval("document.getElementById('rows').textContent")
    assert "unknown model" in text and "no-such-model" in text
    selected = browser.eval("document.getElementById('f-model').selectedOptions[0].textContent")
    assert selected == "no-such-model (unknown)"
    assert browser.page_errors() == []


def test_sorting_and_paging_work_from_the_keyboard(browser: Browser) -> None:
    open_page(browser, "#model=gemma-2-2b&site=resid_post")
    want = [
        r
        for r in listed("--model", "gemma-2-2b", "--hook", "*hook_resid_post")
        if "transcoder" not in (r["architecture"] or "")
    ]
    l0s = sorted(r["l0"] for r in want if r["l0"] is not None)
    assert len(want) > PAGE_SIZE

    def l0_column() -> list[str]:
        return browser.eval(
            "[...document.querySelectorAll('#rows tr')].map(tr => tr.cells[5].textContent)"
        )

    browser.eval("document.querySelector('th[data-sort=\"l0\"] button').focus()")
    browser.key("Enter")
    assert browser.eval("document.querySelector('th[data-sort=\"l0\"]').ariaSort") == "ascending"
    assert float(l0_column()[0]) == pytest.approx(l0s[0], abs=0.01)
    browser.key("Enter")
    assert float(l0_column()[0]) == pytest.approx(l0s[-1], abs=0.01)
    # Unknown L0 sorts last in both directions; the last page ends with them if any.
    browser.eval("document.getElementById('last').focus()")
    browser.key("Enter")
    tail = l0_column()
    n_unknown = sum(r["l0"] is None for r in want)
    assert tail.count("unknown") == min(n_unknown, len(tail))
    assert len(tail) == (len(want) % PAGE_SIZE or PAGE_SIZE)
    # Tab from the top: the skip link, the two links to the markdown, then the filter form;
    # the skip link jumps to the results and leaves the filters (in the URL) alone.
    hash_before = shown(browser, url=True)["hash"]
    browser.eval("document.activeElement.blur(); window.scrollTo(0, 0)")
    focused = []
    for _ in range(4):
        browser.key("Tab")
        focused.append(browser.eval("document.activeElement.id || document.activeElement.href"))
    assert focused[0].endswith("#results-title") and focused[1].endswith("/docs/index.md")
    assert focused[-1] == "f-q", focused
    browser.eval("document.querySelector('a.skip').focus()")
    browser.key("Enter")
    assert browser.eval("document.activeElement.id") == "results-title"
    assert shown(browser, url=True)["hash"] == hash_before
    assert browser.page_errors() == []


def test_layer_width_grid_counts_and_filters_on_click(browser: Browser) -> None:
    open_page(browser)
    # Without a model: one button per model with its count; choosing one selects it.
    chips = browser.eval(
        "Object.fromEntries([...document.querySelectorAll('#grid button[data-model]')]"
        ".map(b => [b.dataset.model, +b.querySelector('.n').textContent.replace(/,/g, '')]))"
    )
    assert chips["gpt2-small"] == len(listed("--model", "gpt2-small"))
    browser.eval("document.querySelector('#grid button[data-model=\"gemma-2-2b\"]').click()")
    assert browser.eval("document.getElementById('f-model').value") == "gemma-2-2b"

    set_field(browser, "site", "resid_post")
    cell = "#grid button[data-layer='12'][data-width='16384']"
    count = int(browser.eval(f'document.querySelector("{cell}").textContent'))
    want = [
        r
        for r in listed("--model", "gemma-2-2b", "--layer", "12", "--width", "16k")
        if r["hook_name"].endswith("hook_resid_post")
        and "transcoder" not in (r["architecture"] or "")
    ]
    assert count == len(want)
    # Keyboard: focus the cell, press Enter; the cell stays focused and pressed.
    browser.eval(f'document.querySelector("{cell}").focus()')
    browser.key("Enter")
    assert (
        browser.eval(
            "[f('layer_min'), f('layer_max'), f('width')].join()".replace(
                "f(", "((n) => document.getElementById('f-' + n).value)("
            )
        )
        == "12,12,16384"
    )
    assert_same(browser, refs(want))
    assert browser.eval("document.activeElement.getAttribute('aria-pressed')") == "true"
    browser.key("Enter")  # again: clears layer and width
    assert browser.eval("document.getElementById('f-width').value") == ""
    assert browser.page_errors() == []


def test_copy_button_copies_a_load_line_that_resolves(browser: Browser) -> None:
    import saereg

    browser.call(
        "Browser.grantPermissions",
        permissions=["clipboardReadWrite", "clipboardSanitizedWrite"],
        session=False,
    )
    open_page(browser, "#q=gpt2-small-res-jb%2Fblocks.8.hook_resid_pre")
    browser.eval("document.querySelector('#rows button.copy').click()")
    browser.eval("new Promise(r => setTimeout(r, 50))")
    text = browser.eval("navigator.clipboard.readText()")
    assert text == 'saereg.load_sae("gpt2-small-res-jb/blocks.8.hook_resid_pre")'
    ref = re.fullmatch(r'saereg\.load_sae\("(.+)"\)', text).group(1)
    assert saereg.resolve(ref).id == "blocks.8.hook_resid_pre"
    assert browser.eval("document.getElementById('announce').textContent") == f"Copied {text}"
    assert browser.page_errors() == []


def test_links_lead_to_the_repository_neuronpedia_and_the_markdown_section(
    browser: Browser,
) -> None:
    open_page(browser, "#q=gpt2-small-res-jb%2Fblocks.8.hook_resid_pre")
    links = browser.eval(
        "Object.fromEntries([...document.querySelectorAll('#rows tr:first-child td.links a')]"
        ".map(a => [a.textContent, a.href]))"
    )
    assert links["repo"] == "https://huggingface.co/jbloom/GPT2-Small-SAEs-Reformatted"
    assert links["Neuronpedia"] == "https://www.neuronpedia.org/gpt2-small/8-res-jb"
    docs_url = links["docs"]
    assert docs_url == (REPO / "docs" / "models" / "gpt2-small.md").as_uri() + "#gpt2-small-res-jb"
    section = "## [gpt2-small-res-jb](https://huggingface.co/jbloom/GPT2-Small-SAEs-Reformatted)"
    assert section in (REPO / "docs" / "models" / "gpt2-small.md").read_text()
    header_links = browser.eval("[...document.querySelectorAll('a.md')].map(a => a.href)")
    markdown = [(REPO / "docs" / name).as_uri() for name in ("index.md", "pretrained_saes.md")]
    assert header_links == markdown


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_served_over_http_the_page_links_to_the_rendered_markdown(browser: Browser) -> None:
    """GitHub Pages serves the markdown rendered as HTML; the links follow."""
    handler = functools.partial(_QuietHandler, directory=str(REPO / "docs"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        browser.open(base + "catalogue.html#q=gpt2-small-res-jb%2Fblocks.8.")
        hrefs = browser.eval(
            "[...document.querySelectorAll('a.md, #rows tr:first-child td.links a')]"
            ".map(a => a.href).filter(h => h.startsWith(location.origin))"
        )
    finally:
        server.shutdown()
        server.server_close()
    assert hrefs == [
        base + "index.html",
        base + "pretrained_saes.html",
        base + "models/gpt2-small.html#gpt2-small-res-jb",
    ]


def test_without_javascript_a_notice_links_to_the_markdown(browser: Browser) -> None:
    browser.call("Emulation.setScriptExecutionDisabled", value=True)
    try:
        browser.open(PAGE.as_uri())
        # With scripting off, <noscript> content is live markup; the filter app stays hidden.
        seen = browser.eval(
            "({notice: document.querySelector('noscript p.notice') !== null"
            " ? document.querySelector('noscript p.notice').textContent : '',"
            " links: [...document.querySelectorAll('noscript a')].map(a => a.getAttribute('href')),"
            " app: document.getElementById('app').hidden,"
            " visible: document.body.innerText})"
        )
    finally:
        browser.call("Emulation.setScriptExecutionDisabled", value=False)
    assert "JavaScript" in seen["notice"], seen
    assert seen["links"] == ["index.md", "pretrained_saes.md"]
    assert seen["app"] is True and "Filter" not in seen["visible"].split("JavaScript")[0][:0]


# ---------------------------------------------------------------------- no browser needed


def test_page_is_generated_by_docs_self_contained_and_checked(tmp_path: Path) -> None:
    # (test_docs covers determinism and `docs --check` for every generated page)
    pages = generate(read_releases([builtin_release_dir()]))
    page = pages["catalogue.html"]
    assert PAGE.read_text(encoding="utf-8") == page  # the committed page is current
    # Nothing is fetched: no external script, style, font or image.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "@import" not in page and "url(" not in page
    for name, text in pages.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert stale_files(pages, tmp_path) == []
    (tmp_path / "catalogue.html").write_text("edited by hand\n")
    assert stale_files(pages, tmp_path) == ["catalogue.html"]


def test_embedded_data_cannot_close_its_script_element() -> None:
    hostile = Release(
        name="x</script><script>alert(1)</script>",
        format="saelens",
        publisher="<!--",
        model="m\u2028",
        revision=None,
        repo_id="org/repo",
        saes=(SAEEntry(id="a</SCRIPT>", path="a", hook_name="blocks.0.hook_resid_pre"),),
    )
    page = render([hostile])
    data = page.split('id="catalogue-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and "\u2028" not in data
    assert json.loads(data)["releases"][0][0] == hostile.name
