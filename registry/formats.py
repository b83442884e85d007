"""The plugin contract: everything a format plugin is written against, in one module.

A plugin is any module or object registered under the entry-point group ``saereg`` in
its package metadata (saereg's built-in formats register through exactly that group)::

    [project.entry-points.saereg]
    my_format = "my_package.my_format"

It implements one or both hooks with ``@hookimpl``:

``saereg_formats() -> list[Format]``
    the `Format` objects it provides, each named by the value of ``format:`` that release
    files use; a name two plugins provide is an error naming both.
``saereg_release_dirs() -> list[Path]``
    extra directories of release files (and a ``models/models.yaml``) it ships.

A format **detects** its SAEs too: `Format.detect(listing, read_small)` says, from a file
listing (and the contents of small config files), where in the listing its SAEs are and
how sure it is. That is how `saereg.load_sae("/data/my_sae")` and uncatalogued
``hf:ORG/REPO/PATH`` references find the format without a release file; two formats
equally sure of one path is an error that names both (the user picks with ``format=``).

(The hooks are declared for pluggy in `saereg.base.hookspecs`.)

A plugin **describes and converts**. It never downloads: the core fetches the
`RemoteFile`s that `Format.files` names and hands `convert` local paths. It never builds
torch modules: `convert` returns a canonical config dict and tensors (torch, numpy, or a
`LazyArray` read only when the core writes it; a `LazyArray` with an `Origin` is an
unchanged view of a publisher safetensors file, which the core may read in place).
Publisher files that are not what they should be raise `CanonicalFileError` with a
sentence naming the file.

A plugin imports nothing from saereg but this module; tests/test_architecture.py holds
the built-in ones to that (import-linter cannot see plugins/, which the wheel maps into
the package). `get_registry()` is the core's side: the installed formats by name, each
with the plugin that provides it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from saereg.base import plugin_host
from saereg.base.errors import PluginError
from saereg.base.hookspecs import hookimpl
from saereg.base.plugin_host import DISABLE_ENV, PluginInfo
from saereg.base.version import __version__
from saereg.catalogue.records import Release, SAEEntry, layer_of_hook, parse_width
from saereg.store.fetch import RemoteFile
from saereg.store.sae_config import CONVERSION, temporal_attention_shapes
from saereg.store.tensors import (
    CODE_OF,
    FLOAT_DTYPES,
    CanonicalFileError,
    LazyArray,
    Origin,
    read_header_from,
)

__all__ = [
    "CODE_OF",
    "FLOAT_DTYPES",
    "MODEL_KEYS",
    "SMALL_FILE_LIMIT",
    "CanonicalFileError",
    "Format",
    "LazyArray",
    "Match",
    "MultiLayerFormat",
    "Origin",
    "ReadSmall",
    "Release",
    "RemoteFile",
    "SAEEntry",
    "folders_holding",
    "get_registry",
    "hookimpl",
    "layer_of_hook",
    "parse_width",
    "read_header_from",
    "read_small_json",
    "stated_model",
    "temporal_attention_shapes",
]


#: Reads one small file of the listing (a config, never weights): its bytes, or
#: CanonicalFileError if it is missing, unreadable or larger than `SMALL_FILE_LIMIT`.
ReadSmall = Callable[[str], bytes]
#: The largest file `read_small` hands a detector.
SMALL_FILE_LIMIT = 1 << 20


@dataclass(frozen=True)
class Match:
    """What `Format.detect` found: where its SAEs are and how sure it is.

    `paths` are SAE paths as `files`/`convert` expect them in `SAEEntry.path`, relative
    to the listing's root; ``""`` means the root itself is one SAE (a folder format whose
    files sit at the top of the listing). `confidence` is in (0, 1]: about 0.9 when the
    format's own file names are all there, 1.0 when a config it read says so too, 0.5
    or less from a file name alone. `read` names the small files consulted; `reason` is
    one line for `saereg detect`. A `MultiLayerFormat` also says, in `n_layers`, how
    many layers each dictionary it found has (path → count, from the listing or its
    config), which a catalogue entry states as ``n_layers``.
    """

    paths: tuple[str, ...]
    confidence: float
    reason: str
    read: tuple[str, ...] = ()
    n_layers: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not 0 < self.confidence <= 1:
            raise ValueError(f"Match confidence {self.confidence} is not in (0, 1]")


def folders_holding(listing: Sequence[str], *names: str) -> list[str]:
    """Every folder of `listing` that holds all of `names` (``""`` for the root), sorted:
    the SAE folders of a format with one folder per SAE."""
    files = set(listing)
    first, rest = names[0], names[1:]
    out = []
    for path in files:
        folder, sep, leaf = path.rpartition("/")
        if leaf != first:
            continue
        prefix = folder + sep
        if all(prefix + name in files for name in rest):
            out.append(folder)
    return sorted(out)


def read_small_json(read_small: ReadSmall, path: str) -> dict[str, Any] | None:
    """A small JSON object of the listing, or None when it is not one (detection never
    fails on a publisher's malformed file; loading reports it)."""
    try:
        value = json.loads(read_small(path))
    except (CanonicalFileError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


#: Where publishers' own configs name the model the SAE was trained on: (file name in the
#: SAE's folder or a folder above it, key path), nearest folder first, then in this order.
#: ``*_cfg.json`` stands for the config beside a file SAE (``NAME_cfg.json`` for ``NAME.pt``).
MODEL_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cfg.json", ("model_name",)),  # SAELens before 6.0 (runner config)
    ("cfg.json", ("metadata", "model_name")),  # SAELens 6.x
    ("*_cfg.json", ("model_name",)),  # Kissane & Krzyzanowski hook_z SAEs
    ("config.json", ("trainer", "lm_name")),  # dictionary_learning (SAEs and crosscoders)
    ("trainer_config.json", ("trainer", "lm_name")),  # crosscoders pushed to the hub
    ("config.json", ("model_name",)),  # Gemma Scope 2
    ("config.json", ("model",)),  # sparsify's run config (RunConfig.model), above hookpoints
    ("config.yaml", ("model_name",)),  # circuit-tracer dictionaries and transcoders
    ("conf.yaml", ("llm", "name")),  # temporal SAEs
    ("lm_config.json", ("model_name",)),  # Llama Scope (lm_saes' LanguageModelConfig)
)


def _small_mapping(read_small: ReadSmall, path: str) -> dict[str, Any] | None:
    if not path.endswith(".yaml"):
        return read_small_json(read_small, path)
    import yaml  # deferred: yaml

    try:
        value = yaml.safe_load(read_small(path))
    except (CanonicalFileError, yaml.YAMLError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def stated_model(
    listing: Sequence[str], read_small: ReadSmall, path: str
) -> tuple[str, str] | None:
    """The model an SAE's own config files name, as (name, "FILE KEY.PATH"), or None.

    `path` is the SAE's path in `listing` (a folder, a file, or ``""`` for the root). The
    configs of `MODEL_KEYS` are read in the SAE's folder, then in each folder above it up
    to the listing's root (sparsify writes its run config above the hookpoint folders);
    the first string found wins. Nothing is guessed from file or repository names."""
    files = set(listing)
    folder, stem = path, ""
    if path in files:  # a file SAE: its folder, and its own NAME_cfg.json
        folder, _, leaf = path.rpartition("/")
        stem = leaf.rsplit(".", 1)[0]
    while True:
        prefix = f"{folder}/" if folder else ""
        for name, keys in MODEL_KEYS:
            if name.startswith("*"):
                if not stem:
                    continue
                name = stem + name[1:]
            config = prefix + name
            if config not in files:
                continue
            value: Any = _small_mapping(read_small, config)
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, str) and value.strip():
                return value.strip(), f"{config} {'.'.join(keys)}"
        if not folder:
            return None
        folder, stem = folder.rpartition("/")[0], ""


class Format:
    """Base class for a publisher format. Subclasses set `name` and override methods.

    `name` is the value of ``format:`` in release files. Methods receive the frozen
    Release and SAEEntry from the catalogue.
    """

    name: str = ""
    #: One line shown by `saereg plugins`.
    summary: str = ""

    @property
    def loads(self) -> bool:
        """Whether `load_sae` can fetch and convert this format's SAEs (it overrides
        `files` and `convert`), or only describe them."""
        cls = type(self)
        return cls.files is not Format.files and cls.convert is not Format.convert

    def describe(self, release: Release, entry: SAEEntry) -> dict[str, Any]:
        """Metadata derivable without downloading anything: any of hook_name,
        hook_layer, d_sae, d_in, d_out, context_size, normalize_activations,
        architecture, k, hook_name_out, hf_hook_name, nested_widths, dataset.

        Return only what follows from release metadata and path conventions for
        certain; leave a key out rather than guess. Raise ValueError with a plain
        sentence when the path does not follow the format's conventions.
        """
        return {}

    def files(self, release: Release, entry: SAEEntry) -> Sequence[RemoteFile]:
        """The files to fetch for one SAE."""
        raise NotImplementedError(
            f"format {self.name!r} cannot download weights yet (only its metadata is "
            "catalogued); see the project's issue tracker"
        )

    def convert(
        self, release: Release, entry: SAEEntry, local_files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Publisher files → (canonical config dict, {tensor name: tensor})."""
        raise NotImplementedError(
            f"format {self.name!r} cannot convert weights yet (only its metadata is "
            "catalogued); see the project's issue tracker"
        )

    def config_only(
        self,
        release: Release,
        entry: SAEEntry,
        local_files: Mapping[str, Path],
        tensor_shapes: Mapping[str, Mapping[str, tuple[str, tuple[int, ...]]]],
    ) -> dict[str, Any] | None:
        """The canonical config without the weights, where the format allows it.

        `local_files` holds the files not marked `weights`; `tensor_shapes` maps each
        safetensors weights file to {tensor: (dtype, shape)} read from its header (from
        the cache, or over HTTP range requests); it is empty when a weights file is not
        safetensors. Return None when only the weights can tell (npz or pickle files
        without a config naming the shapes); the core then converts the SAE fully.
        """
        return None

    def discover(self, repo_id: str, listing: Sequence[str]) -> list[dict[str, Any]]:
        """Scaffold release entries (id, path, derived fields) from a repository listing."""
        return []

    def model_named(
        self, listing: Sequence[str], read_small: ReadSmall, path: str
    ) -> tuple[str, str] | None:
        """The model the SAE at `path` (as `detect` reported it) names in its own config
        files: (name as written, "FILE KEY"), or None. `saereg detect` and `saereg new`
        put it in the release files they write. The default reads the configs that
        `MODEL_KEYS` lists; override it where a format's config keeps the name elsewhere."""
        return stated_model(listing, read_small, path)

    def detect(self, listing: Sequence[str], read_small: ReadSmall) -> Match | None:
        """Whether `listing` (file paths relative to a folder or repository, ``/``-separated)
        holds SAEs of this format, and where; None if it holds none.

        Decide from file names, and where names are shared with other formats, from small
        config files read with `read_small` (never weights). Report every SAE found:
        several paths make the core ask the user to name one. `files` and `convert` must
        then work for each path without a release file: a release whose `repo_id` does
        not follow the publisher's naming, entries with only `id` and `path` (plus what
        the user passes, such as hook_name or k).
        """
        return None


class MultiLayerFormat(Format):
    """A format whose entries are multi-layer dictionaries (cross-layer transcoders,
    transcoder sets), stored and loaded one source layer at a time.

    `kind` is ``clt`` or ``transcoder_set``. `files` names the small files that describe
    the whole dictionary (a ``config.yaml``); the core fetches them first and hands them
    to `n_layers`, `layer_files` and `convert_layer`, so that loading one layer
    downloads and reads only that layer's files. `convert_layer` returns the canonical
    layer config (kind, layer, n_layers, architecture, k, d_in, d_sae, d_out,
    hook_names, hook_names_out, dtype) and the canonical tensors of one layer, named as
    schemas/dictionary.v1.json says.
    """

    kind: str = "clt"

    @property
    def loads(self) -> bool:
        cls = type(self)
        return cls.layer_files is not MultiLayerFormat.layer_files and (
            cls.convert_layer is not MultiLayerFormat.convert_layer
        )

    def n_layers(self, release: Release, entry: SAEEntry, small_files: Mapping[str, Path]) -> int:
        """How many layers the dictionary has, from its small files (or the catalogue)."""
        if entry.n_layers is None:
            raise CanonicalFileError(
                f"{release.name}/{entry.id}: the release does not say n_layers, and "
                f"format {self.name!r} cannot tell from the files"
            )
        return entry.n_layers

    def layer_files(
        self, release: Release, entry: SAEEntry, layer: int, small_files: Mapping[str, Path]
    ) -> Sequence[RemoteFile]:
        """The files one layer needs, besides the small files."""
        raise NotImplementedError(f"format {self.name!r} cannot download layers")

    def convert_layer(
        self,
        release: Release,
        entry: SAEEntry,
        layer: int,
        n_layers: int,
        local_files: Mapping[str, Path],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One layer's files (and the small files) → (layer config dict, tensors)."""
        raise NotImplementedError(f"format {self.name!r} cannot convert layers")


class Registry:
    """The loaded plugins and the formats they provide, by name."""

    def __init__(self, infos: Sequence[PluginInfo], provided: Mapping[str, Sequence[Any]]):
        self.formats: dict[str, Format] = {}
        #: format name → the plugin that provides it (for provenance in canonical files).
        self.format_owner: dict[str, PluginInfo] = {}
        enriched = []
        for info in infos:
            names: list[str] = []
            for fmt in provided.get(info.name, []):
                if not isinstance(fmt, Format) or not fmt.name:
                    raise PluginError(
                        f"plugin {info.name!r} ({info.distribution}) returned {fmt!r} from "
                        "saereg_formats(); expected saereg.Format instances with a name"
                    )
                if fmt.name in self.formats:
                    raise PluginError(
                        f"format {fmt.name!r} is provided by two plugins: "
                        f"{self.format_owner[fmt.name].name!r} and {info.name!r} "
                        f"({info.distribution}); uninstall one, or disable it with "
                        f"{DISABLE_ENV}={info.name}"
                    )
                self.formats[fmt.name] = fmt
                self.format_owner[fmt.name] = info
                names.append(fmt.name)
            enriched.append(info._replace(formats=tuple(names)))
        self.infos = enriched

    def format(self, name: str) -> Format:
        try:
            return self.formats[name]
        except KeyError:
            known = ", ".join(sorted(self.formats)) or "none"
            raise PluginError(
                f"unknown format {name!r}; installed formats: {known}. "
                "Install the plugin that provides it, or check the release's 'format:' field."
            ) from None

    def detect(
        self, listing: Sequence[str], read_small: ReadSmall, only: str | None = None
    ) -> list[tuple[Format, Match]]:
        """Every installed format's `detect` on one listing (only the format named `only`,
        if given), most confident first. A detector that raises is reported as a plugin
        error naming it: a silent skip could hand the SAE to a wrong format."""
        formats = [self.format(only)] if only else list(self.formats.values())
        found = []
        for fmt in formats:
            try:
                match = fmt.detect(listing, read_small)
            except Exception as exc:
                owner = self.format_owner.get(fmt.name)
                raise PluginError(
                    f"format {fmt.name!r}"
                    + (f" (plugin {owner.name!r}, {owner.distribution})" if owner else "")
                    + f" failed while detecting: {type(exc).__name__}: {exc}; disable it with "
                    f"{DISABLE_ENV}=NAME or report it to the plugin's authors"
                ) from None
            if match is not None and match.paths:
                found.append((fmt, match))
        found.sort(key=lambda fm: (-fm[1].confidence, fm[0].name))
        return found


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The installed formats, loaded once per process (see reset_registry for tests)."""
    plugins = plugin_host.loaded_plugins()
    provided = {
        impl.plugin_name: list(impl.function() or [])
        for impl in plugins.manager.hook.saereg_formats.get_hookimpls()
    }
    return Registry(plugins.infos, provided)


def conversion_source(
    fmt: Format,
    release: Release,
    entry: SAEEntry,
    revision: str | None,
    hashes: Mapping[str, str],
) -> dict[str, Any]:
    """The `source` record of a canonical config: what was converted (release, SAE id,
    repository or base URL, path, revision, each file's sha256) and by which plugin and
    saereg version. Single SAEs and every layer of a multi-layer dictionary carry the
    same record, so `cache verify` and provenance questions read one shape."""
    info = get_registry().format_owner.get(fmt.name)
    return {
        "release": release.name,
        "sae_id": entry.id,
        "format": fmt.name,
        "repo_id": release.repo_id,
        "base_url": release.base_url,
        "path": entry.path,
        "revision": revision,
        "files": dict(hashes),
        "plugin": f"{info.distribution}=={info.version} ({info.name})" if info else None,
        "conversion": CONVERSION,
        "saereg_version": __version__,
    }


def reset_registry() -> None:
    """Forget loaded plugins and formats (tests change the environment between cases)."""
    plugin_host.reset()
    get_registry.cache_clear()
