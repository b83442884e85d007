"""reference → multi-layer dictionary, one layer at a time.

A cross-layer transcoder or transcoder set is fetched, converted and cached per source
layer (saereg.store.layer_config): the small files describing the whole dictionary (a
``config.yaml``) first, then, for each layer asked for, only that layer's publisher
files. Each layer becomes its own canonical file keyed by release, SAE id, layer and
revision, in place on the publisher's safetensors where the conversion only takes views.
When the revision is known locally and every asked-for layer is cached, loading makes
no network call and reads nothing but those layers' headers until the tensors are used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from saereg.base.errors import CacheWarning, SaeregError
from saereg.catalogue.models import hf_hooks
from saereg.catalogue.records import Release, SAEEntry
from saereg.formats import Format, MultiLayerFormat, conversion_source
from saereg.sae.arguments import check_device, check_dtype
from saereg.store.cache import mark_used
from saereg.store.canonical import canonical_cache_path
from saereg.store.digest import stored_digest, tensor_digest
from saereg.store.fetch import FetchError, content_revision, offline, show_progress
from saereg.store.in_place import in_place_enabled, missing_sources, plan_in_place
from saereg.store.integrity import conversion_problem, source_problems
from saereg.store.layer_config import (
    LAYERED_KINDS,
    LayerConfig,
    read_layer_config,
    write_layer,
)
from saereg.store.layer_config import layer_id as _layer_id
from saereg.store.local import fetch_files, known_revision
from saereg.store.revisions import newest_cached, revision_to_fetch
from saereg.store.sae_config import ConfigError
from saereg.store.tensors import CanonicalFileError

if TYPE_CHECKING:
    import torch

    from saereg.sae.crosscoder import CrossCoder
    from saereg.sae.multilayer import MultiLayerDictionary

    #: What saereg.loading resolved a reference to: (release, entry, format, the
    #: revision to fetch, as the reference or the caller named it).
    Source = tuple[Release, SAEEntry, Format, str | None]


class DictionaryError(SaeregError):
    """A multi-layer dictionary cannot be loaded as asked (not one, or no such layers)."""


@dataclass(frozen=True)
class LoadOptions:
    """The keyword options every loading entry point takes (`load_sae`,
    `load_dictionary`, `fetch_canonical`, `fetch_dictionary`), held in one object that
    is checked once and passed whole: an option added here reaches single SAEs and
    multi-layer dictionaries alike, whichever function was called. `revision` is the
    one the caller passed; the reference may name its own (``hf:REPO@REV``), which
    resolving folds into the `Source`."""

    device: str | torch.device = "cpu"
    dtype: str | torch.dtype | None = "float32"
    revision: str | None = None
    force: bool = False
    quiet: bool | None = None
    verify: bool = False

    def checked(self) -> LoadOptions:
        """Device and dtype as torch objects, and SAEREG_IN_PLACE read: what can be
        wrong with the arguments fails here, before any download."""
        in_place_enabled()
        return replace(self, device=check_device(self.device), dtype=check_dtype(self.dtype))


def layer_id(entry: SAEEntry, layer: int) -> str:
    """The cache key of one layer of a dictionary entry."""
    return _layer_id(entry.id, layer)


def check_layers(layers: Iterable[int] | None, n_layers: int, where: str) -> list[int]:
    """The layers asked for, sorted; every one must exist."""
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    wanted = sorted({int(i) for i in layers})
    bad = [i for i in wanted if not 0 <= i < n_layers]
    if bad or not wanted:
        raise DictionaryError(
            f"{where} has layers 0..{n_layers - 1}; layers={list(layers)} "
            + (f"names {bad}" if bad else "names none")
        )
    return wanted


def fetch_layers(
    source: Source, layers: Iterable[int] | int | None, options: LoadOptions
) -> list[Path]:
    """Download and convert the asked-for layers of the dictionary `source` names once;
    their cache files. With `options.verify`, a cached layer is served only if its
    tensor bytes match the digest in its header and the publisher files it reads in
    place their recorded sha256 (full reads).

    `source` is what saereg.loading resolved the reference to (a catalogue entry, or a
    local folder or uncatalogued repository read by saereg.detection); its revision is
    expanded as a single SAE's is (saereg.store.revisions)."""
    release, entry, fmt, revision = source
    force, quiet, verify = options.force, options.quiet, options.verify
    if isinstance(layers, int):
        layers = [layers]
    where = f"{release.name}/{entry.id}"
    if not isinstance(fmt, MultiLayerFormat) or entry.resolved_kind not in LAYERED_KINDS:
        raise DictionaryError(
            f"{where} is a {entry.resolved_kind}, not a multi-layer dictionary of a kind "
            f"saereg stores per layer ({', '.join(LAYERED_KINDS)}); load it with load_sae"
        )
    revision = revision_to_fetch(release, entry, revision)
    whole = fmt.kind == "crosscoder"  # every latent reads every site: one file
    if whole and layers is not None:
        raise DictionaryError(
            f"{where} is a crosscoder: each latent reads all its sites at once, so it loads "
            "whole (leave out layers=)"
        )
    # A local folder's (or plain URL's) revision is a digest of the files read: each
    # layer's is its own files' and the small files' together, so a changed layer file
    # converts that layer again.
    per_file = release.repo_id is None
    small_files = fmt.files(release, entry)
    known = None if per_file else known_revision(release, small_files, revision)
    if known is not None and not force and entry.n_layers is not None:
        wanted = [0] if whole else check_layers(layers, entry.n_layers, where)
        paths = [canonical_cache_path(release.name, layer_id(entry, i), known) for i in wanted]
        if all(
            _cache_hit(p, release, entry, i, known, verify=verify)
            for p, i in zip(paths, wanted, strict=True)
        ):
            return _used(paths)
    try:
        small = fetch_files(release, entry, small_files, revision, force=force, quiet=quiet)
    except FetchError:
        served = None if force else _offline_layers(release, entry, revision, layers, whole, verify)
        if served is None:
            raise
        return _used(served)
    try:
        n_layers = fmt.n_layers(release, entry, small.paths)
    except CanonicalFileError as exc:
        raise CanonicalFileError(f"{where}: {exc}") from None
    wanted = [0] if whole else check_layers(layers, n_layers, where)
    paths = []
    for i in wanted:
        changed: list[str] = []  # publisher files found damaged: download them again
        if small.revision is not None and not per_file:  # else known once they are fetched
            target = canonical_cache_path(release.name, layer_id(entry, i), small.revision)
            if not force and _cache_hit(
                target,
                release,
                entry,
                i,
                small.revision,
                warn=True,
                verify=verify,
                changed=changed,
            ):
                paths.append(target)
                continue
        files = fmt.layer_files(release, entry, i, small.paths)
        fetched = fetch_files(
            release,
            entry,
            files,
            small.revision or revision,
            force=force or bool(changed),
            quiet=quiet,
        )
        layer_revision = fetched.revision
        if per_file:
            digests = [*small.sha256.values(), *fetched.sha256.values()]
            layer_revision = content_revision(digests)
        if small.revision is None or per_file:
            target = canonical_cache_path(release.name, layer_id(entry, i), layer_revision)
            if not force and _cache_hit(
                target, release, entry, i, layer_revision, warn=not per_file, verify=verify
            ):
                paths.append(target)
                continue
        local = {**small.paths, **fetched.paths}
        hashes = {**small.sha256, **fetched.sha256}
        try:
            converted, tensors = fmt.convert_layer(release, entry, i, n_layers, local)
            cfg = _layer_config(fmt, release, entry, converted, hashes, layer_revision)
            storage, tensors = plan_in_place(
                tensors, local, hashes, release.repo_id, fetched.revision
            )
            if storage is not None:
                cfg = cfg.replace(storage=storage)
            write_layer(target, cfg, tensors, progress=show_progress(quiet))
        except (CanonicalFileError, ConfigError) as exc:
            raise CanonicalFileError(f"{where}, layer {i}: {exc}") from None
        except (SaeregError, NotImplementedError, MemoryError):
            raise
        except Exception as exc:  # a damaged or unexpected publisher file
            names = ", ".join(f.path for f in files)
            raise CanonicalFileError(
                f"{where}, layer {i}: cannot convert {names}: {type(exc).__name__}: {exc}. A "
                "damaged download? Retry with force=True (`saereg fetch --force`)"
            ) from None
        paths.append(target)
    return _used(paths)


def _offline_layers(
    release: Release,
    entry: SAEEntry,
    revision: str | None,
    layers: Iterable[int] | int | None,
    whole: bool,
    verify: bool,
) -> list[Path] | None:
    """Offline, for an unpinned hub release whose branch cannot be looked up: the
    asked-for layers at the newest revision saereg holds every one of them (as a single
    SAE falls back to its newest cached entry; store/revisions.py says once which), or
    None. The layer count comes from layer 0's cached config."""
    if not (offline() and release.repo_id) or revision or release.revision:
        return None
    where = f"{release.name}/{entry.id}"
    chosen: list[Path] = []

    def usable(first: Path, rev: str) -> bool:
        try:
            n_layers = read_layer_config(first).n_layers
        except (SaeregError, OSError):
            return False
        wanted = [0] if whole else check_layers(layers, n_layers, where)
        paths = [canonical_cache_path(release.name, layer_id(entry, i), rev) for i in wanted]
        if all(
            _cache_hit(p, release, entry, i, rev, verify=verify)
            for p, i in zip(paths, wanted, strict=True)
        ):
            chosen[:] = paths
            return True
        return False

    return chosen if newest_cached(release.name, layer_id(entry, 0), usable) else None


def _used(paths: list[Path]) -> list[Path]:
    for path in paths:
        mark_used(path)
    return paths


def _layer_config(
    fmt: MultiLayerFormat,
    release: Release,
    entry: SAEEntry,
    converted: dict[str, Any],
    hashes: dict[str, str],
    revision: str | None,
) -> LayerConfig:
    base = {"model": release.model, **converted}
    base["source"] = conversion_source(fmt, release, entry, revision, hashes)
    where = f"{release.name}/{entry.id}, layer {converted.get('layer')}"
    mismatch = width_mismatch(entry, base)
    if mismatch:
        raise CanonicalFileError(mismatch)
    return LayerConfig.from_dict(base, where)


def width_mismatch(entry: SAEEntry, held: Mapping[str, Any]) -> str | None:
    """Where the release's d_sae or d_in disagrees with what the converted files hold
    (single SAEs and dictionary layers alike), or None."""
    for key in ("d_sae", "d_in"):
        listed = getattr(entry, key)
        if listed is not None and held.get(key) is not None and listed != held[key]:
            return f"the release lists {key}={listed} but the files hold {key}={held[key]}"
    return None


def _cache_hit(
    path: Path,
    release: Release,
    entry: SAEEntry,
    layer: int,
    revision: str | None,
    *,
    warn: bool = False,
    verify: bool = False,
    changed: list[str] | None = None,
) -> bool:
    """Whether the cached layer file may be served: it names this release, SAE, layer
    and revision, and the publisher files it reads in place are still there (with
    `verify`, also byte for byte)."""
    if not path.is_file():
        return False
    try:
        cfg = read_layer_config(path)
        src = cfg.source
        ours = (src.get("release"), src.get("sae_id"), src.get("revision"), cfg.layer)
        if ours != (release.name, entry.id, revision, layer):
            raise CanonicalFileError(f"{path} describes {ours}, not this layer")
        stale = conversion_problem(src)
        if stale:
            raise CanonicalFileError(f"{path} {stale}")
        gone = missing_sources(cfg)  # type: ignore[arg-type]
        if gone:
            raise CanonicalFileError(f"{path}: " + "; ".join(gone))
        if verify:
            stored = stored_digest(path)
            if stored is None or stored != tensor_digest(path):
                raise CanonicalFileError(f"{path}: its tensor bytes do not match its digest")
            damaged = source_problems(cfg)  # type: ignore[arg-type]
            if damaged:
                if changed is not None:
                    changed.extend(damaged)
                raise CanonicalFileError(f"{path}: " + "; ".join(damaged))
    except (SaeregError, OSError) as exc:
        if warn:
            warnings.warn(f"{exc}; rebuilding it from the publisher files", CacheWarning, 2)
        return False
    return True


def _hf_sites(release: Release, names: Sequence[str | None]) -> tuple[Any, ...]:
    found = []
    for name in names:
        hooks = hf_hooks(release.model, SimpleNamespace(hook_name=name, hook_name_out=None))
        found.append(hooks["hf_hook"] if name else None)
    return tuple(found)


def load_layers(
    source: Source, layers: Iterable[int] | int | None, options: LoadOptions
) -> MultiLayerDictionary | CrossCoder:
    """Load the cross-layer transcoder (`saereg.sae.clt.CrossLayerTranscoder`) or
    transcoder set (`saereg.sae.transcoder_set.TranscoderSet`) `source` names, all
    layers or only `layers`, each memory-mapped from its own cache file onto
    `options.device` in `options.dtype`; or a crosscoder (`saereg.sae.crosscoder.CrossCoder`,
    one file, always whole). `source`: as for `fetch_layers`."""
    from saereg.sae.clt import CrossLayerTranscoder  # torch: imported when a module is built
    from saereg.sae.crosscoder import CrossCoder  # torch
    from saereg.sae.transcoder_set import TranscoderSet  # torch

    options = options.checked()  # before any download
    paths = fetch_layers(source, layers, options)
    first = read_layer_config(paths[0])
    classes = {"clt": CrossLayerTranscoder, "transcoder_set": TranscoderSet}
    cls = classes.get(first.kind, CrossCoder)
    release = source[0]
    return cls.load(  # type: ignore[attr-defined, no-any-return]
        paths,
        device=options.device,
        dtype=options.dtype,
        hf_hooks=_hf_sites(release, first.hook_names),
        hf_hooks_out=_hf_sites(release, first.hook_names_out),
    )


__all__ = ["DictionaryError", "LoadOptions", "fetch_layers", "load_layers"]
