"""Reference → the full record of one SAE, touching as little as possible.

The common case, ``RELEASE/SAE_ID`` for a built-in release, reads exactly one release
file and imports neither torch, jsonschema nor the plugins. Only when the first part is
not a built-in release do we load plugins (for their release directories) and the
compiled index (for Neuronpedia ids and suggestions).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saereg.base.errors import UnknownReferenceError
from saereg.catalogue.index import CatalogIndex, load_index
from saereg.catalogue.list_filters import check_filters, is_glob, width_value
from saereg.catalogue.models import hf_hooks, model_matches
from saereg.catalogue.records import Release, SAEEntry, plain_dict
from saereg.catalogue.refs import RELEASE_NAME_RE, best_matches, close_matches, parse_reference
from saereg.catalogue.release_check import MAX_NAME
from saereg.catalogue.release_dirs import (
    all_release_names,
    builtin_release_dir,
    env_release_dirs,
    extra_release_dirs,
    release_dirs,
)
from saereg.catalogue.release_files import read_release_file

NEURONPEDIA_URL = "https://www.neuronpedia.org/"


@dataclass(frozen=True)
class ResolvedSAE:
    """Everything the catalogue knows about one SAE, release-level fields included."""

    release: str
    id: str
    model: str
    model_hub_id: str | None
    publisher: str
    format: str
    repo_id: str | None
    base_url: str | None
    revision: str | None
    path: str
    hook_name: str | None
    hook_layer: int | None
    hook_name_out: str | None
    hf_hook_name: str | None
    hf_hook: Mapping[str, str] | None
    hf_hook_out: Mapping[str, str] | None
    architecture: str | None
    kind: str
    n_layers: int | None
    d_in: int | None
    d_out: int | None
    d_sae: int | None
    k: int | None
    context_size: int | None
    normalize_activations: str | None
    norm_scaling_factor: float | None
    nested_widths: tuple[int, ...] | None
    dataset: str | None
    neuronpedia: str | None
    neuronpedia_url: str | None
    l0: float | None
    variance_explained: float | None
    license: str | None
    links: Mapping[str, str]
    model_from_pretrained_kwargs: Mapping[str, Any] | None
    sha256: Mapping[str, str] | None
    source_file: str | None

    @classmethod
    def from_release(cls, release: Release, entry: SAEEntry) -> ResolvedSAE:
        hooks = hf_hooks(release.model, entry)
        return cls(
            release=release.name,
            id=entry.id,
            model=release.model,
            model_hub_id=hooks["model_hub_id"],
            publisher=release.publisher,
            format=release.format,
            repo_id=release.repo_id,
            base_url=release.base_url,
            revision=release.revision,
            path=entry.path,
            hook_name=entry.hook_name,
            hook_layer=entry.hook_layer,
            hook_name_out=entry.hook_name_out,
            hf_hook_name=entry.hf_hook_name,
            hf_hook=hooks["hf_hook"],
            hf_hook_out=hooks["hf_hook_out"],
            architecture=entry.architecture,
            kind=entry.resolved_kind,
            n_layers=entry.n_layers,
            d_in=entry.d_in,
            d_out=entry.d_out,
            d_sae=entry.d_sae,
            k=entry.k,
            context_size=entry.context_size,
            normalize_activations=entry.normalize_activations,
            norm_scaling_factor=entry.norm_scaling_factor,
            nested_widths=entry.nested_widths,
            dataset=entry.dataset,
            neuronpedia=entry.neuronpedia,
            neuronpedia_url=NEURONPEDIA_URL + entry.neuronpedia if entry.neuronpedia else None,
            l0=entry.l0,
            variance_explained=entry.variance_explained,
            license=release.license,
            links=release.links,
            model_from_pretrained_kwargs=release.model_from_pretrained_kwargs,
            sha256=entry.sha256,
            source_file=release.source_file,
        )

    @property
    def ref(self) -> str:
        return f"{self.release}/{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


def _find_release_file(name: str) -> Path | None:
    if len(name) > MAX_NAME or not RELEASE_NAME_RE.match(name):
        return None
    candidate = builtin_release_dir() / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    for directories in (env_release_dirs, extra_release_dirs):  # plugins load only if needed
        for directory in directories():
            candidate = directory / f"{name}.yaml"
            if candidate.is_file():
                return candidate
    return None


def get_release(name: str) -> Release:
    """The release called `name`; UnknownReferenceError (with suggestions) if none is."""
    path = _find_release_file(name)
    if path is None:
        raise UnknownReferenceError(
            f"Unknown release {name!r}.", close_matches(name, all_release_names())
        )
    return read_release_file(path)


def resolve(ref: str) -> ResolvedSAE:
    """Resolve ``RELEASE/SAE_ID``, a Neuronpedia id, or ``hf:ORG/REPO/PATH``."""
    return ResolvedSAE.from_release(*resolve_entry(ref))


def resolve_entry(ref: str) -> tuple[Release, SAEEntry]:
    """Like `resolve`, but returns the release and its entry (one file read)."""
    parsed = parse_reference(ref)
    if parsed.kind == "hf":
        return _resolve_hf(parsed.repo_id or "", parsed.path or "")
    assert parsed.release is not None
    path = _find_release_file(parsed.release)
    if path is not None:
        release = read_release_file(path)
        if parsed.kind == "bare":
            examples = ", ".join(e.id for e in release.saes[:3])
            raise UnknownReferenceError(
                f"{parsed.release!r} is a release with {len(release.saes)} SAEs; name one as "
                f"{parsed.release}/SAE_ID (for example {parsed.release}/{release.saes[0].id}; "
                f"ids: {examples}, …) or run `saereg info {parsed.release}`."
            )
        assert parsed.sae_id is not None
        entry = release.sae(parsed.sae_id)
        if entry is None:
            ids = [e.id for e in release.saes]
            near = close_matches(parsed.sae_id, ids)
            message = f"Release {release.name!r} has no SAE {parsed.sae_id!r}."
            if not near:
                shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
                message += (
                    f" Its {len(ids)} SAEs: {shown} (`saereg info {release.name} --all` "
                    "lists every id)."
                )
            raise UnknownReferenceError(message, near)
        return release, entry
    return _resolve_via_index(parsed.text, parsed.could_be_neuronpedia)


def _resolve_via_index(text: str, could_be_neuronpedia: bool) -> tuple[Release, SAEEntry]:
    index = load_index(release_dirs())
    if could_be_neuronpedia:
        by_np = index.by_neuronpedia()
        hit = by_np.get(text)
        if hit is not None:
            return resolve_entry(f"{hit[0]}/{hit[1]}")
    release_part = text.split("/", 1)[0]
    groups: list[tuple[str, list[str]]] = [(release_part, list(index.releases))]
    if could_be_neuronpedia:
        groups.append((text, list(index.by_neuronpedia())))
    suggestions = best_matches(groups)
    if could_be_neuronpedia:
        message = (
            f"Unknown reference {text!r}: no release is called {release_part!r} and no SAE "
            "has that Neuronpedia id."
        )
    else:
        message = f"Unknown release {release_part!r}."
    raise UnknownReferenceError(message, suggestions)


def _resolve_hf(repo_id: str, path: str) -> tuple[Release, SAEEntry]:
    index = load_index(release_dirs())
    # A repository that moved (fnlp/… → OpenMOSS-Team/…): its former name means the new one.
    repo_id = index.repo_names().get(repo_id, repo_id)
    in_repo = [rec for rec in index.records() if rec["repo_id"] == repo_id]
    matches = [rec for rec in in_repo if rec["path"].strip("/") == path]
    if not matches:
        if in_repo:
            raise UnknownReferenceError(
                f"No registered SAE of {repo_id} lives at {path!r}.",
                close_matches(path, [r["path"] for r in in_repo]),
            )
        raise UnknownReferenceError(
            f"Repository {repo_id!r} is not in the catalogue: load_sae and `saereg fetch` read "
            f"it by format detection (`saereg detect hf:{repo_id}` shows what it holds); "
            f"`saereg new --repo {repo_id}` adds it (see CONTRIBUTING.md)."
        )
    # Built-in releases first (an extra release cannot take a reference over), then the
    # release where the id is the path itself (not a '-canonical' alias).
    matches.sort(
        key=lambda r: (
            not index.releases[r["release"]].get("builtin"),
            r["id"] != r["path"],
            r["release"],
        )
    )
    best = matches[0]
    return resolve_entry(f"{best['release']}/{best['id']}")


def _glob(value: str | None, pattern: str | None) -> bool:
    if pattern is None:
        return True
    return value is not None and fnmatch.fnmatchcase(value.lower(), pattern.lower())


def list_saes(
    *,
    model: str | None = None,
    release: str | None = None,
    hook: str | None = None,
    layer: int | None = None,
    width: int | str | None = None,
    format: str | None = None,
) -> list[dict[str, Any]]:
    """SAEs of the whole catalogue matching every filter given (globs: `*`, `?`, `[...]`).

    `model` is any name of the model (canonical, hub id, alias; case-insensitive) or a
    glob over those names;
    `width` is d_sae (an int, or '16k' as `saereg list --width` takes it).
    A model, format, release or hook without glob characters that no release has raises
    UnknownReferenceError with close matches (list_filters.py), never an empty list.
    """
    return select_rows(
        model=model, release=release, hook=hook, layer=layer, width=width, format=format
    )[1]


def select_releases(
    index: CatalogIndex,
    *,
    model: str | None = None,
    release: str | None = None,
    format: str | None = None,
) -> list[str]:
    """The releases of `index` the release-level filters of `list_saes` keep; a
    glob-free value that names nothing raises UnknownReferenceError (list_filters.py)."""
    check_filters(index.releases, (), model=model, release=release, hook=None, format=format)
    return [
        name
        for name, rel in index.releases.items()
        if _glob(name, release)
        and model_matches(rel["model"], model)
        and (format is None or rel["format"] == format)
    ]


def select_rows(
    *,
    model: str | None = None,
    release: str | None = None,
    hook: str | None = None,
    layer: int | None = None,
    width: int | str | None = None,
    format: str | None = None,
) -> tuple[CatalogIndex, list[dict[str, Any]]]:
    """`list_saes` with the index it read (for callers that print straight from it)."""
    width = width_value(width)
    index = load_index(release_dirs())
    keep = select_releases(index, model=model, release=release, format=format)
    rows = index.records_of(keep)  # only these releases' records are read
    if hook is not None and not is_glob(hook) and all(r["hook_name"] != hook for r in rows):
        # Not among the chosen releases: an error only if no release has it at all (the
        # whole catalogue is read for that question alone).
        hooks = [r["hook_name"] for r in index.records()]
        check_filters(index.releases, hooks, model=None, release=None, hook=hook, format=None)
    if hook is not None or layer is not None or width is not None:
        rows = [
            r
            for r in rows
            if _glob(r["hook_name"], hook)
            and (layer is None or r["hook_layer"] == layer)
            and (width is None or r["d_sae"] == width)
        ]
    return index, rows
