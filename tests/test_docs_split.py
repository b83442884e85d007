"""Generated markdown stays under the page limit: a model too large for one page is split
into parts by release name, `pretrained_saes.md` becomes a list of links, and every link
(index, overview, catalogue page) lands on the page holding the release's table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from saereg.catalogue.release_dirs import builtin_release_dir
from saereg.catalogue.release_files import read_releases
from saereg.publish import docs
from saereg.publish.links import heading_anchor

LIMIT = 12_000
PART = 6_000


@pytest.fixture(scope="module")
def releases() -> list:
    return [r for r in read_releases([builtin_release_dir()]) if r.model == "gpt2-small"]


def _headings(text: str) -> list[str]:
    return re.findall(r"^## \[([^\]]+)\]\(", text, flags=re.M)


def test_large_models_are_split_and_every_link_lands(
    releases: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs, "MAX_PAGE_BYTES", LIMIT)
    monkeypatch.setattr(docs, "PART_BYTES", PART)
    pages = docs.generate(releases)
    markdown = {path: text for path, text in pages.items() if path.endswith(".md")}
    assert max(len(t.encode()) for t in markdown.values()) <= LIMIT
    parts = sorted(p for p in markdown if p.startswith("models/gpt2-small/"))
    assert len(parts) > 1  # the model did not fit on one page
    # Every release's table is on exactly one part (a release split across parts goes on
    # with "(continued)" headings), with every one of its rows.
    on_parts = [h for p in parts for h in _headings(markdown[p])]
    assert sorted(on_parts) == sorted(r.name for r in releases)
    all_rows = "".join(markdown[p] for p in parts)
    for rel in releases:
        for e in rel.saes:
            assert f"| {e.id} |" in all_rows
    # The overview, the index and pretrained_saes.md link each release to its part.
    assert "do not fit on one page" in markdown["models/gpt2-small.md"]
    assert "larger than one page" in markdown["pretrained_saes.md"]
    for page in ("models/gpt2-small.md", "index.md", "pretrained_saes.md"):
        base = Path(page).parent
        links = re.findall(r"\]\(([^)#]+\.md)#([^)]+)\)", markdown[page])
        assert links, page
        for target, anchor in links:
            resolved = (base / target).as_posix()
            assert resolved in markdown, (page, target)
            names = [heading_anchor(h) for h in _headings(markdown[resolved])]
            assert anchor in names, (page, target, anchor)
    # The catalogue page's "markdown" link of each release names the same part.
    data = json.loads(
        pages["catalogue.html"].split('id="catalogue-data">', 1)[1].split("</script>", 1)[0]
    )
    for rel_row in data["releases"]:
        page, anchor = rel_row[5].split("#")
        assert anchor in [heading_anchor(h) for h in _headings(markdown[f"{page}.md"])]


def test_a_release_larger_than_a_part_is_continued(
    releases: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = max(releases, key=lambda r: len(r.saes))
    section = docs.release_section(big)
    monkeypatch.setattr(docs, "MAX_PAGE_BYTES", len(section) // 2)
    monkeypatch.setattr(docs, "PART_BYTES", len(section) // 3)
    pages = docs.generate([big])
    parts = [t for p, t in pages.items() if p.startswith("models/") and p.count("/") == 2]
    assert len(parts) >= 3 and all(len(t.encode()) <= len(section) // 2 for t in parts)
    assert all("(continued)" in t for t in parts[1:])
    rows = [
        line.split(" | ", 1)[0][2:]
        for t in parts
        for line in t.splitlines()
        if line.startswith("| ") and not line.startswith("| id |")
    ]
    assert rows == [e.id for e in big.saes]  # every row once, in order


def test_stale_parts_are_removed(
    tmp_path: Path, releases: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs, "MAX_PAGE_BYTES", LIMIT)
    monkeypatch.setattr(docs, "PART_BYTES", PART)
    out = tmp_path / "docs"
    docs.write(docs.generate(releases), out)
    assert (out / "models" / "gpt2-small").is_dir()
    monkeypatch.setattr(docs, "MAX_PAGE_BYTES", 10**9)
    pages = docs.generate(releases)
    assert any(p.startswith("models/gpt2-small/") for p in docs.stale_files(pages, out))
    docs.write(pages, out)
    assert not (out / "models" / "gpt2-small").exists() and docs.stale_files(pages, out) == []
