"""reference → canonical SAE: resolve, fetch, convert through the format plugin, cache.

The canonical cache is keyed by release, SAE id and the revision the files came from.
When that revision is known locally (a pinned commit, a ref recorded in the HF cache, or
files in saereg's download cache) and the canonical file exists, loading makes no
network call and reads one safetensors file straight onto the target device.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from saereg.base.errors import ArgumentError, CacheWarning, SaeregError, UnknownReferenceError
from saereg.catalogue.models import hf_hooks
from saereg.catalogue.records import DICTIONARY_KINDS, Release, SAEEntry
from saereg.catalogue.refs import parse_hf_reference
from saereg.catalogue.resolver import resolve_entry
from saereg.detection import check_overrides, is_path_reference, resolve_source
from saereg.formats import Format, conversion_source, get_registry
from saereg.loading_layers import (
    DictionaryError,
    LoadOptions,
    fetch_layers,
    load_layers,
    width_mismatch,
)
from saereg.store.cache import mark_used
from saereg.store.canonical import (
    TargetIsDirectory,
    canonical_cache_path,
    read_config,
    write_canonical,
)
from saereg.store.fetch import (
    FetchError,
    cached_commit,
    hf_cache_dir,
    offline,
    remote_safetensors_header,
    show_progress,
)
from saereg.store.in_place import SourceFileError, in_place_enabled, plan_in_place
from saereg.store.integrity import Expected, PublisherFileChanged, verify_canonical
from saereg.store.local import fetch_files, known_revision, local_root
from saereg.store.revisions import newest_cached, revision_to_fetch
from saereg.store.sae_config import ConfigError, SAEConfig
from saereg.store.tensors import CanonicalFileError, read_header

if TYPE_CHECKING:
    import torch

    from saereg.sae.crosscoder import CrossCoder
    from saereg.sae.module import SAE
    from saereg.sae.multilayer import MultiLayerDictionary


class ConversionError(SaeregError):
    """A plugin produced tensors or a config that do not describe a valid SAE."""


class CacheError(SaeregError):
    """saereg's cache directory cannot be written (a file in its place, full, read-only)."""


#: Errors that are the disk's, whichever file they name.
_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _resolve(
    ref: str | os.PathLike[str], overrides: Mapping[str, Any], revision: str | None
) -> tuple[Release, SAEEntry, Format | None, str | None]:
    """(release, entry, format, revision to fetch). A catalogue reference resolves in the
    catalogue (its format is looked up only when needed); a local path, or a ``hf:``
    reference no release lists, by format detection (saereg.detection), at the commit
    its listing named."""
    if is_path_reference(ref):
        release, entry, fmt, _ = resolve_source(ref, overrides, revision)
        return release, entry, fmt, None
    text = str(ref)
    ref_revision = None
    if text.strip().startswith("hf:"):
        _, ref_revision, path = parse_hf_reference(text)
        try:
            if not path:
                raise UnknownReferenceError(text)
            release, entry = resolve_entry(text)
        except UnknownReferenceError:
            release, entry, fmt, _ = resolve_source(text, overrides, revision)
            return release, entry, fmt, None
    else:
        try:
            release, entry = resolve_entry(text)
        except UnknownReferenceError as exc:
            if os.path.exists(os.path.expanduser(text)):
                raise UnknownReferenceError(
                    f"{exc} A local file or folder {text!r} exists: to load it, write it as "
                    f"'./{text}' (references without ./, / or ~ name catalogue entries)."
                ) from None
            raise
    given = check_overrides(overrides)
    if given:
        raise ArgumentError(
            f"{text} is {release.name}/{entry.id} in the catalogue, whose release file states "
            f"its fields; {', '.join(sorted(given))}= apply only to local folders and "
            "repositories no release describes"
        )
    return release, entry, None, ref_revision or revision


def _lookup(
    ref: str | os.PathLike[str], overrides: Mapping[str, Any], revision: str | None
) -> tuple[Release, SAEEntry, Format, str | None]:
    release, entry, fmt, revision = _resolve(ref, overrides, revision)
    return release, entry, fmt or get_registry().format(release.format), revision


@dataclass(frozen=True)
class Reference:
    """A reference resolved once, by the catalogue or by format detection: what it
    names and where its files are. `fetch_canonical`, `fetch_dictionary`, `load_sae`
    and `load_dictionary` take one in place of the text, so a caller that must know
    the kind before fetching (`saereg fetch`, `saereg export`) resolves it, and lists
    an uncatalogued repository, once."""

    text: str
    release: Release
    entry: SAEEntry
    detected: Format | None  # detection's choice; None: the release's, looked up lazily
    revision: str | None  # the revision to fetch, as the reference or the caller named it

    @property
    def kind(self) -> str:
        """``sae``, ``transcoder``, or a multi-layer kind (``clt``, ``transcoder_set``,
        ``crosscoder``)."""
        return self.entry.resolved_kind

    @property
    def where(self) -> str:
        return f"{self.release.name}/{self.entry.id}"

    def source(self) -> tuple[Release, SAEEntry, Format, str | None]:
        """(release, entry, format, revision), the format's plugin loaded."""
        fmt = self.detected or get_registry().format(self.release.format)
        return self.release, self.entry, fmt, self.revision


def resolve_reference(
    ref: str | os.PathLike[str] | Reference, *, revision: str | None = None, **overrides: Any
) -> Reference:
    """Resolve `ref` (as for `load_sae`) without fetching anything but, for a local
    folder or uncatalogued repository, its listing and the small files detection reads."""
    if isinstance(ref, Reference):
        if revision is not None or overrides:
            given = sorted([*overrides, *(["revision"] if revision is not None else [])])
            raise ArgumentError(
                f"{ref.text} is already resolved; {', '.join(given)}= apply when resolving "
                "it (pass them to resolve_reference)"
            )
        return ref
    release, entry, detected, resolved = _resolve(ref, overrides, revision)
    return Reference(str(ref), release, entry, detected, resolved)


def _cached_for_hub(
    release: Release,
    entry: SAEEntry,
    revision: str | None,
    verify: bool = False,
    changed: list[str] | None = None,
) -> Path | None:
    """The canonical file of a hub release whose revision the HF cache already knows:
    found without loading any plugin or touching the network."""
    if not release.repo_id:
        return None
    known = cached_commit(release.repo_id, revision or release.revision)
    if known is None:
        return None
    path = canonical_cache_path(release.name, entry.id, known)
    return path if _cache_hit(path, release, entry, known, verify, changed=changed) else None


def _single(release: Release, entry: SAEEntry) -> None:
    """Single-hook entries only: a multi-layer dictionary has one canonical file per layer."""
    kind = entry.resolved_kind
    if kind in DICTIONARY_KINDS:
        raise DictionaryError(
            f"{release.name}/{entry.id} is a {kind} of {entry.n_layers or 'several'} layers, "
            "stored one canonical file per layer: load it with load_sae (layers=[...] for a "
            "subset), or `saereg fetch REF --layers 0,1` for the files"
        )


def build_config(
    fmt: Format,
    release: Release,
    entry: SAEEntry,
    converted: Mapping[str, Any],
    hashes: Mapping[str, str],
    revision: str | None,
) -> SAEConfig:
    """Catalogue metadata + what the plugin read from the files + provenance.

    The model is the release's (for a folder or an uncatalogued ``hf:`` repository:
    ``model=``, else what the publisher's config names; detection.py spells it as the
    models table does); the Hugging Face hook points follow from it and from the hook
    names the files settle."""
    base: dict[str, Any] = {
        "hook_name": entry.hook_name,
        "hook_name_out": entry.hook_name_out,
        "hf_hook_name": entry.hf_hook_name,
        "hook_layer": entry.hook_layer,
        "context_size": entry.context_size,
        "dataset": entry.dataset,
        "nested_widths": list(entry.nested_widths) if entry.nested_widths else None,
        "neuronpedia": entry.neuronpedia,
    }
    base.update(converted)
    base["model"] = release.model or None
    hooks = SimpleNamespace(hook_name=base["hook_name"], hook_name_out=base["hook_name_out"])
    base.update(hf_hooks(release.model, hooks))
    base["source"] = conversion_source(fmt, release, entry, revision, hashes)
    where = f"{release.name}/{entry.id}"
    mismatch = width_mismatch(entry, base)
    if mismatch:
        raise ConversionError(
            f"{where}: {mismatch}; the release file or the upstream files are wrong — please "
            "report it (and pin the revision that matches)"
        )
    try:
        return SAEConfig.from_dict(base, where)
    except ConfigError as exc:
        raise ConversionError(f"format {fmt.name!r} produced an invalid config: {exc}") from None


def fetch_canonical(
    ref: str | os.PathLike[str] | Reference,
    *,
    revision: str | None = None,
    force: bool = False,
    quiet: bool | None = None,
    verify: bool = False,
    **overrides: Any,
) -> Path:
    """Download and convert `ref` once; return the canonical file's path.

    A cached file is used only if its header names this release, SAE id and revision
    (with `verify`, also if its tensor bytes match the digest in its header); otherwise
    it is rebuilt from the publisher files, which are usually still cached. `overrides`
    are those of `load_sae`."""
    in_place_enabled()  # a junk SAEREG_IN_PLACE fails before any download
    options = LoadOptions(revision=revision, force=force, quiet=quiet, verify=verify)
    path = _fetch_canonical(resolve_reference(ref, revision=revision, **overrides), options)
    mark_used(path)  # for `saereg cache ls` / `prune --older-than`
    return path


def _fetch_canonical(reference: Reference, options: LoadOptions) -> Path:
    release, entry, detected = reference.release, reference.entry, reference.detected
    force, quiet, verify = options.force, options.quiet, options.verify
    _single(release, entry)
    revision = revision_to_fetch(release, entry, reference.revision)
    changed: list[str] = []  # publisher files found damaged: download them again
    if not force:
        hit = _cached_for_hub(release, entry, revision, verify, changed)
        if hit is not None:
            return hit
    fmt = detected or get_registry().format(release.format)
    files = fmt.files(release, entry)
    known = known_revision(release, files, revision)
    if known is not None and not force:
        cached = canonical_cache_path(release.name, entry.id, known)
        # (a hub release's file was checked, and any problem reported, just above)
        if _cache_hit(
            cached, release, entry, known, verify, warn=not release.repo_id, changed=changed
        ):
            return cached
    refetch = force or bool(changed)
    try:
        fetched = fetch_files(release, entry, files, revision, force=refetch, quiet=quiet)
    except FetchError:
        hit = None if force else _offline_fallback(release, entry, revision, verify)
        if hit is None:
            raise
        return hit
    target = canonical_cache_path(release.name, entry.id, fetched.revision)
    if not refetch and _cache_hit(target, release, entry, fetched.revision, verify, warn=False):
        return target
    where = f"{release.name}/{entry.id}"
    sources = ", ".join(str(p) for p in fetched.paths.values()) or "no files"
    try:
        converted, tensors = fmt.convert(release, entry, fetched.paths)
        cfg = build_config(fmt, release, entry, converted, fetched.sha256, fetched.revision)
        storage, tensors = plan_in_place(
            tensors, fetched.paths, fetched.sha256, release.repo_id, fetched.revision
        )
        if storage is not None:
            cfg = cfg.replace(storage=storage)
        write_canonical(target, cfg, tensors, progress=show_progress(quiet))
        if verify and cfg.storage:  # it reads publisher files in place: check those too
            _verify_rebuilt(target, release, entry, fetched.revision)
    except (CacheError, SourceFileError, TargetIsDirectory):
        raise
    except (CanonicalFileError, ConfigError) as exc:
        message = str(exc).replace(str(target), f"the tensors converted from {sources}")
        raise ConversionError(f"{where}: {message}") from None
    except (SaeregError, NotImplementedError, MemoryError):
        raise
    except OSError as exc:
        in_cache = exc.filename is not None and _inside(Path(str(exc.filename)), target.parent)
        if in_cache or exc.errno in _DISK_ERRNOS:
            raise CacheError(
                f"{where}: cannot write the cache entry {target}: {exc.strerror or exc} "
                "(check SAEREG_CACHE and the free disk space)"
            ) from None
        raise _unreadable(where, sources, exc) from None
    except Exception as exc:
        raise _unreadable(where, sources, exc) from None
    return target


def _offline_fallback(
    release: Release, entry: SAEEntry, revision: str | None, verify: bool
) -> Path | None:
    """Offline, for an unpinned hub release: the newest cached entry that loads without
    any publisher file missing (see store/revisions.py), or None."""
    if not (offline() and release.repo_id) or revision or release.revision:
        return None

    def usable(path: Path, rev: str) -> bool:
        return _cache_hit(path, release, entry, rev, verify, warn=False)

    return newest_cached(release.name, entry.id, usable)


def _verify_rebuilt(path: Path, release: Release, entry: SAEEntry, revision: str | None) -> None:
    expect = Expected(release.name, entry.id, revision, entry.path, dict(entry.sha256 or {}))
    try:
        verify_canonical(path, expect, deep=True)
    except SaeregError as exc:
        raise CacheError(
            f"{release.name}/{entry.id}: {_short(exc)}; downloading it again did not help "
            "(offline, or the hub serves other bytes than it names?). Remove it from the "
            "Hugging Face cache and fetch again online"
        ) from None


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder`, inside it, or one of the folders above it."""
    return path == folder or folder in path.parents or path in folder.parents


def _unreadable(where: str, sources: str, exc: BaseException) -> ConversionError:
    """numpy, zipfile, torch.load or the plugin's own code failing on a damaged or
    unexpected publisher file: say which files, not which line of which library."""
    return ConversionError(
        f"{where}: cannot convert the publisher files ({sources}): "
        f"{type(exc).__name__}: {_short(exc)}. A damaged download? Retry with "
        "`saereg fetch --force`; if it persists, the release file or the format plugin "
        "is wrong — please report it"
    )


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cache_hit(
    path: Path,
    release: Release,
    entry: SAEEntry,
    revision: str | None,
    verify: bool,
    *,
    warn: bool = True,
    changed: list[str] | None = None,
) -> bool:
    """Whether the cached canonical file at `path` may be served for this SAE (publisher
    files found changed are added to `changed`)."""
    if not path.is_file():
        return False
    expect = Expected(release.name, entry.id, revision, entry.path, dict(entry.sha256 or {}))
    try:
        verify_canonical(path, expect, deep=verify)
    except (SaeregError, OSError) as exc:
        if isinstance(exc, PublisherFileChanged) and changed is not None:
            changed.append(str(exc))
        if warn:
            warnings.warn(f"{_short(exc)}; rebuilding it from the publisher files", CacheWarning, 2)
        return False
    return True


def fetch_dictionary(
    ref: str | os.PathLike[str] | Reference,
    layers: Iterable[int] | int | None = None,
    *,
    revision: str | None = None,
    force: bool = False,
    quiet: bool | None = None,
    verify: bool = False,
    **overrides: Any,
) -> list[Path]:
    """Download and convert the asked-for layers of a multi-layer dictionary once (all
    by default); their canonical layer files. `ref` and `overrides` are as for
    `load_sae`."""
    in_place_enabled()  # a junk SAEREG_IN_PLACE fails before any download
    options = LoadOptions(revision=revision, force=force, quiet=quiet, verify=verify)
    reference = resolve_reference(ref, revision=revision, **overrides)
    return fetch_layers(reference.source(), layers, options)


def load_dictionary(
    ref: str | os.PathLike[str] | Reference,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = "float32",
    revision: str | None = None,
    force: bool = False,
    quiet: bool | None = None,
    verify: bool = False,
    layers: Iterable[int] | int | None = None,
    **overrides: Any,
) -> MultiLayerDictionary | CrossCoder:
    """Load a multi-layer dictionary: a cross-layer transcoder (`CrossLayerTranscoder`)
    or transcoder set (`TranscoderSet`), all layers or only `layers`, each memory-mapped
    from its own cache file onto `device` in `dtype` (float32 unless given, as for
    `load_sae`; None keeps the stored dtype); or a crosscoder (`CrossCoder`, always
    whole). `ref`, every option and `overrides` are as for `load_sae`, which returns the
    same for these references through the same code; this one refuses anything else."""
    options = LoadOptions(
        device=device, dtype=dtype, revision=revision, force=force, quiet=quiet, verify=verify
    )
    return _load(ref, layers, options, overrides, dictionaries_only=True)  # type: ignore[return-value]


def load_sae(
    ref: str | os.PathLike[str] | Reference,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = "float32",
    revision: str | None = None,
    force: bool = False,
    quiet: bool | None = None,
    verify: bool = False,
    layers: Iterable[int] | int | None = None,
    **overrides: Any,
) -> SAE | MultiLayerDictionary | CrossCoder:
    """Load an SAE as a canonical `SAE` module on `device` in `dtype`.

    `ref` is a catalogue reference (``RELEASE/SAE_ID``, a Neuronpedia id,
    ``hf:ORG/REPO[@REVISION]/PATH``), a local folder or file (a str starting with ``/``,
    ``./``, ``../`` or ``~``, or an `os.PathLike`), or a ``hf:`` reference to a
    repository no release lists: those are read by format detection. For them,
    `overrides` state what the files cannot say: ``format`` (when two formats fit),
    ``sae`` (which SAE of a folder holding several), ``model``, ``hook_name``,
    ``hook_name_out``, ``hook_layer``, ``hf_hook_name``, ``k``, ``context_size``,
    ``normalize_activations``, ``norm_scaling_factor``, ``dataset``.

    The dtype rule: the SAE is loaded in float32 (as SAELens and TransformerLens load
    theirs), whatever dtype the publisher stored, unless you pass `dtype` ("bfloat16",
    "float16", "float64", a torch.dtype), or `dtype=None` for the stored dtype as it is
    (`sae.cfg.dtype` says which; no cast, the least memory). The module computes in its
    own dtype (`sae.dtype`) and returns every output (latents, reconstructions) in it,
    whatever the input's dtype: inputs are cast on the way in.

    The first call downloads the publisher's files and converts them once; later calls
    read the cached canonical file directly onto the device (a local folder is
    converted again when a file it reads changes). `verify` also checks the cached
    tensor bytes against the digest in the file (a full read). `revision`: a branch,
    tag or commit, or a unique prefix of a commit already cached (as `saereg cache ls`
    prints it).

    A multi-layer dictionary (kind clt, transcoder_set or crosscoder in `saereg list`)
    comes back as its multi-layer module (`CrossLayerTranscoder`, `TranscoderSet`,
    `CrossCoder`; see `load_dictionary`), all layers or only `layers`, each fetched and
    cached on its own.
    """
    options = LoadOptions(
        device=device, dtype=dtype, revision=revision, force=force, quiet=quiet, verify=verify
    )
    return _load(ref, layers, options, overrides, dictionaries_only=False)


def _load(
    ref: str | os.PathLike[str] | Reference,
    layers: Iterable[int] | int | None,
    options: LoadOptions,
    overrides: Mapping[str, Any],
    *,
    dictionaries_only: bool,
) -> SAE | MultiLayerDictionary | CrossCoder:
    """The one loading path of `load_sae` and `load_dictionary`: every option reaches a
    single SAE and a multi-layer dictionary alike."""
    from saereg.sae.module import SAE  # torch: imported only when a module is built

    options = options.checked()  # device, dtype, SAEREG_IN_PLACE: before any download
    reference = resolve_reference(ref, revision=options.revision, **overrides)
    kind = reference.kind
    if kind in DICTIONARY_KINDS:
        return load_layers(reference.source(), layers, options)
    if dictionaries_only:
        raise DictionaryError(
            f"{reference.where} is a {kind}, not a multi-layer dictionary (kind "
            f"{', '.join(DICTIONARY_KINDS)}); load it with load_sae"
        )
    if layers is not None:
        raise DictionaryError(
            f"{reference.text} is a single {kind}; layers= selects layers of a multi-layer "
            f"dictionary (kind {', '.join(DICTIONARY_KINDS)})"
        )
    path = _fetch_canonical(reference, options)
    mark_used(path)  # for `saereg cache ls` / `prune --older-than`
    return SAE.load(path, device=options.device, dtype=options.dtype)


def load_config(
    ref: str | os.PathLike[str],
    *,
    revision: str | None = None,
    quiet: bool | None = None,
    **overrides: Any,
) -> SAEConfig:
    """The canonical config of `ref`, downloading no weights where the format allows.

    Order: the canonical cache; then the format's config-only path (small files plus
    safetensors headers, read from the HF cache or over HTTP range requests); else a
    full fetch and conversion. `ref` and `overrides` are as for `load_sae`.
    """
    release, entry, fmt, revision = _lookup(ref, overrides, revision)
    _single(release, entry)
    revision = revision_to_fetch(release, entry, revision)
    files = fmt.files(release, entry)
    known = known_revision(release, files, revision)
    if known is not None:
        cached = canonical_cache_path(release.name, entry.id, known)
        if _cache_hit(cached, release, entry, known, False, warn=False):
            return read_config(cached).replace(storage=None)
    try:
        small = fetch_files(release, entry, files, revision, quiet=quiet, include_weights=False)
    except FetchError:
        hit = _offline_fallback(release, entry, revision, False)
        if hit is None:
            raise
        return read_config(hit).replace(storage=None)
    shapes: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    weights = [f for f in files if f.weights]
    if all(f.path.endswith(".safetensors") for f in weights):
        for f in weights:
            header = _header_for(release, f.path, revision)
            if header is None:
                continue
            shapes[f.path] = {n: (i["dtype"], tuple(i["shape"])) for n, i in header.items()}
        converted = fmt.config_only(release, entry, small.paths, shapes)
        if converted is not None:
            return build_config(fmt, release, entry, converted, small.sha256, small.revision)
    elif (converted := fmt.config_only(release, entry, small.paths, {})) is not None:
        # Pickled weights, but small files that hold the whole config (dictionary_learning).
        return build_config(fmt, release, entry, converted, small.sha256, small.revision)
    canonical = fetch_canonical(ref, revision=revision, quiet=quiet, **overrides)
    return read_config(canonical).replace(storage=None)


def _header_for(release: Release, path: str, revision: str | None) -> dict[str, Any] | None:
    from huggingface_hub import try_to_load_from_cache  # deferred: huggingface_hub

    root = local_root(release)
    if root is not None:
        return read_header(root / path)[0] if (root / path).is_file() else None
    if not release.repo_id:
        return None
    rev = revision or release.revision or "main"
    local = try_to_load_from_cache(release.repo_id, path, cache_dir=hf_cache_dir(), revision=rev)
    if isinstance(local, str):
        return read_header(Path(local))[0]
    return remote_safetensors_header(release.repo_id, path, rev)[0]
