"""The browsable catalogue: one static HTML page with every SAE, filtered in the browser.

The markdown catalogue is too large to read as a wall of tables; people pick an SAE by
filtering (model, hook site, layer, width, L0) and sorting. ``saereg docs`` therefore also
writes ``catalogue.html``: the HTML, CSS and JavaScript in ``page_assets/`` with the
catalogue embedded as compact JSON, so the page needs no server, CDN or build step and
works from ``file://``. Like the markdown it is deterministic (``docs --check`` compares
bytes), so nothing here depends on the clock, the machine or dictionary order.

The embedded data is dictionary-encoded: repeated strings (models, publishers, formats,
architectures, hook names) are listed once and rows refer to them by position, which
keeps ~14,000 rows around a megabyte and quick to parse.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from saereg.catalogue.models import get_model
from saereg.catalogue.records import DICTIONARY_KINDS, KIND_LABELS, Release, SAEEntry
from saereg.publish.links import NEURONPEDIA, heading_anchor, model_slug

PAGE = "catalogue.html"
DATA_VERSION = 1

#: Hook sites the page filters by. A value ``a_b`` also matches the filter ``a``.
SITES = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_z",
    "attn_out",
    "mlp_in",
    "mlp_out",
    "transcoder",
    "embed",
    "other",
)
_SITE_PATTERNS = (
    (re.compile(r"hook_resid_pre$"), "resid_pre"),
    (re.compile(r"hook_resid_mid$"), "resid_mid"),
    (re.compile(r"hook_resid_post$"), "resid_post"),
    (re.compile(r"attn\.hook_z$"), "attn_z"),
    (re.compile(r"hook_attn_out$"), "attn_out"),
    (re.compile(r"(hook_mlp_in|mlp\.hook_in|ln2\.hook_normalized)$"), "mlp_in"),
    (re.compile(r"hook_mlp_out$"), "mlp_out"),
    (re.compile(r"^hook_(pos_)?embed$"), "embed"),
)


def _model_label(release: Release) -> str:
    """The model name rows are filtered and grouped by: the canonical name from the models
    table (the catalogue already reads every alias as it), so one model is one chip."""
    return release.model


def hook_site(entry: SAEEntry) -> str:
    """Where in the model an SAE reads: transcoders first (they read one site and write
    another), then the TransformerLens hook name's last part."""
    if entry.hook_name_out or entry.resolved_kind != "sae":
        return "transcoder"
    for pattern, site in _SITE_PATTERNS:
        if pattern.search(entry.hook_name or ""):
            return site
    return "other"


def _architecture(entry: SAEEntry) -> str:
    """The architecture column: a multi-layer dictionary shows its kind first."""
    if entry.resolved_kind in DICTIONARY_KINDS:
        label = KIND_LABELS[entry.resolved_kind]
        return f"{label} ({entry.architecture})" if entry.architecture else label
    return entry.architecture or ""


def site_index(entry: SAEEntry) -> int:
    """`hook_site` as a position in SITES, computed once per distinct hook (140,000 SAEs
    share a few hundred hook names). The cache key is every field `hook_site` reads."""
    return _site_index(entry.hook_name, entry.hook_name_out, entry.architecture, entry.kind)


@lru_cache(maxsize=4096)
def _site_index(
    hook_name: str | None, hook_name_out: str | None, arch: str | None, kind: str | None
) -> int:
    probe = SAEEntry(
        "", "", hook_name=hook_name, hook_name_out=hook_name_out, architecture=arch, kind=kind
    )
    return SITES.index(hook_site(probe))


def repository_url(release: Release) -> str:
    if release.repo_id:
        return f"https://huggingface.co/{release.repo_id}"
    return release.base_url or ""


def markdown_link(release: Release, pages: Mapping[str, str] | None = None) -> str:
    """The release's section in its model's pages (the small page, not the whole
    catalogue), without the extension: the page adds `.md` or `.html` depending on where
    it is read. `pages`: release name → the page holding its section (docs.py lays a large
    model out over several pages); by default the model's page."""
    page = (pages or {}).get(release.name) or f"models/{model_slug(release.model)}"
    return f"{page}#{heading_anchor(release.name)}"


class _Strings:
    """Values listed once, in first-seen order, and referred to by position."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._pos: dict[Any, int] = {}

    def __call__(self, value: Any) -> int:
        if value not in self._pos:
            self._pos[value] = len(self.values)
            self.values.append(value)
        return self._pos[value]


def page_data(
    releases: Sequence[Release], pages: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The catalogue as the page reads it; `releases` in the order rows are listed by
    default (the markdown's: model, then release name); `pages` as for `markdown_link`."""
    models, publishers, formats, archs, hooks = (_Strings() for _ in range(5))
    rel_rows = []
    rows = []
    for r_i, rel in enumerate(releases):
        rel_rows.append(
            [
                rel.name,
                models(_model_label(rel)),
                publishers(rel.publisher),
                formats(rel.format),
                repository_url(rel),
                markdown_link(rel, pages),
            ]
        )
        for e in rel.saes:
            rows.append(
                [
                    r_i,
                    e.id,
                    hooks(e.hook_name or ""),
                    e.hook_layer,
                    e.d_sae,
                    e.l0,
                    archs(_architecture(e)),
                    site_index(e),
                    e.neuronpedia or "",
                ]
            )
    return {
        "v": DATA_VERSION,
        "neuronpedia": NEURONPEDIA,
        "sites": list(SITES),
        "models": models.values,
        "aliases": model_aliases(models.values),
        "publishers": publishers.values,
        "formats": formats.values,
        "archs": archs.values,
        "hooks": hooks.values,
        "releases": rel_rows,
        "rows": rows,
    }


def model_aliases(models: Sequence[str]) -> dict[str, int]:
    """{alias, lower-cased: index into `models`} for every other name the models table
    gives a model (hub id, TransformerLens name...), so `#model=gpt2` in a link selects
    gpt2-small, as `saereg list --model gpt2` does."""
    out: dict[str, int] = {}
    for j, name in enumerate(models):
        info = get_model(name)
        for alias in info.names if info is not None else ():
            if alias != name:
                out.setdefault(alias.lower(), j)
    return dict(sorted(out.items()))


def _embed_json(data: Any) -> str:
    """JSON safe inside a <script> element: no `</script>` or `<!--` can appear."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _asset(name: str) -> str:
    return (resources.files("saereg.publish") / "page_assets" / name).read_text(encoding="utf-8")


def render(releases: Iterable[Release], pages: Mapping[str, str] | None = None) -> str:
    """The whole page, for releases in catalogue order (model, then release name);
    `pages` as for `markdown_link`."""
    ordered = sorted(releases, key=lambda r: (r.model.lower(), r.model, r.name.lower()))
    data = page_data(ordered, pages)
    n_saes = len(data["rows"])
    summary = f"{len(ordered)} releases, {n_saes:,} SAEs, {len(data['models'])} models"
    parts = {
        "css": _asset("catalogue.css").rstrip("\n"),
        "js": _asset("catalogue.js").rstrip("\n"),
        "summary": html.escape(summary),
        "data": _embed_json(data),
    }
    # One pass: a placeholder-like text inside a substituted part is left alone.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], _asset("catalogue.html"))
