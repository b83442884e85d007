"""Release files → frozen dataclasses.

A release file is parsed once, migrated to the current schema version, and turned into
`Release` / `SAEEntry` objects whose SAE-level fields already include the release's
`defaults`. Nothing here imports torch or jsonschema: this module sits on the resolve
path, which must stay fast (see benchmarks/bench_registry.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from saereg.base.errors import ReleaseFileError
from saereg.catalogue import safeyaml
from saereg.catalogue.compiled import compiled_release_path, read_compiled, stamp_of, write_compiled
from saereg.catalogue.migrations import CURRENT_SCHEMA, migrate
from saereg.catalogue.models import ModelInfo, derive_widths, get_model
from saereg.catalogue.records import INHERITABLE, REQUIRED_SAE_FIELDS, SAE_FIELDS, Release, SAEEntry
from saereg.catalogue.release_check import raise_if, safety_problems, schema_problems
from saereg.catalogue.release_dirs import is_builtin, release_files

if TYPE_CHECKING:
    import yaml


# --------------------------------------------------------------------------- parsing


def release_from_doc(doc: dict[str, Any], source_file: str | None = None) -> Release:
    """Build the frozen Release from a document that already follows the current schema.

    Only the structure needed to build objects is checked here; full checking is
    `saereg validate` (schema.py and lint.py).
    """
    where = source_file or doc.get("name", "<release>")
    defaults = dict(doc.get("defaults") or {})
    model = _known_model(doc.get("model"))
    # What every entry starts from: the dataclass defaults, then the release's defaults.
    base = dict(_ENTRY_DEFAULTS)
    base.update((k, v) for k, v in defaults.items() if k in INHERITABLE)
    saes = []
    for i, raw in enumerate(doc.get("saes") or []):
        if not isinstance(raw, dict) or "id" not in raw or "path" not in raw:
            raise ReleaseFileError(f"{where}: saes[{i}] needs at least 'id' and 'path'")
        values = base.copy()
        if raw.keys() <= _ENTRY_FIELDS:
            values.update(raw)
        else:  # keys the schema allows but entries do not keep (comments, upstream extras)
            values.update((k, v) for k, v in raw.items() if k in _ENTRY_FIELDS)
        if type(values["id"]) is not str:
            values["id"] = str(values["id"])
        if type(values["path"]) is not str:
            values["path"] = str(values["path"])
        if values["nested_widths"] is not None:
            values["nested_widths"] = tuple(values["nested_widths"])
        if values["sha256"] is not None:
            values["sha256"] = MappingProxyType(dict(values["sha256"]))
        if model is not None:
            derive_widths(values, model)
        saes.append(_new_entry(values))
    try:
        return Release(
            name=doc["name"],
            format=doc["format"],
            publisher=doc.get("publisher", "unknown"),
            model=model.name if model is not None else doc["model"],
            revision=doc.get("revision"),
            saes=tuple(saes),
            repo_id=doc.get("repo_id"),
            base_url=doc.get("base_url"),
            repo_aliases=tuple(doc.get("repo_aliases") or ()),
            license=doc.get("license"),
            description=doc.get("description"),
            links=MappingProxyType(dict(doc.get("links") or {})),
            model_from_pretrained_kwargs=doc.get("model_from_pretrained_kwargs"),
            defaults=MappingProxyType(defaults),
            source_file=source_file,
        )
    except KeyError as exc:
        raise ReleaseFileError(f"{where}: missing required field {exc.args[0]!r}") from None


#: Every SAEEntry field but the required id and path, at its dataclass default.
_ENTRY_DEFAULTS = {f.name: f.default for f in fields(SAEEntry) if f.name not in ("id", "path")}
_ENTRY_FIELDS = frozenset(SAE_FIELDS)


def _new_entry(values: dict[str, Any]) -> SAEEntry:
    """An SAEEntry from a dict holding every one of its fields, without the generated
    __init__: a frozen dataclass sets each of its 22 fields through object.__setattr__,
    which was a third of reading a 140,000-SAE catalogue. The result is the same object
    (the dataclass's equality, hash and repr read the same attributes)."""
    entry = object.__new__(SAEEntry)
    entry.__dict__.update(values)
    return entry


def _known_model(name: Any) -> ModelInfo | None:
    """The models-table entry of a release's `model` (None if unknown: `validate` says so)."""
    return get_model(name) if isinstance(name, str) else None


def read_release_file(path: str | os.PathLike[str]) -> Release:
    """Parse (and migrate) one release file.

    The migrated document is kept as JSON in ``$SAEREG_CACHE/index/releases``, keyed by
    the file's path, size and mtime: reading JSON is ~10x faster than YAML, which matters
    for releases with hundreds of SAEs on the resolve and load paths.
    """
    path = Path(path)
    try:
        stamp = stamp_of(path, CURRENT_SCHEMA)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise ReleaseFileError(
            f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    compiled = compiled_release_path(stamp[0])
    cached = read_compiled(compiled, stamp)
    if cached is not None:
        try:
            return _checked_release(cached["doc"], str(path), is_builtin(path))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged compiled copy: parse the file again
    try:
        text = safeyaml.decode(path.read_bytes(), str(path))
    except OSError as exc:
        raise ReleaseFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    builtin = is_builtin(path)  # built-in files are validated in CI (tests/test_validate.py)
    doc = safeyaml.load_yaml(text, str(path), scan=not builtin)
    if not isinstance(doc, dict):
        raise ReleaseFileError(f"{path}: a release file must be a YAML mapping")
    doc = migrate(doc, str(path))
    if not builtin:
        raise_if(schema_problems(text, str(path)), str(path))
    release = _checked_release(doc, str(path), builtin)
    write_compiled(compiled, {"stamp": stamp, "doc": doc})
    return release


def _checked_release(doc: dict[str, Any], source_file: str, builtin: bool) -> Release:
    """The release, once its safety rules hold (built-in files: checked by CI's validate)."""
    if not builtin:
        raise_if(safety_problems(doc, source_file), source_file)
    return release_from_doc(doc, source_file)


# --------------------------------------------------------------------------- directories


def read_releases(directories: Iterable[Path], problems: list[str] | None = None) -> list[Release]:
    """Every release in `directories`; where two share a name the first directory wins
    (`saereg validate` reports the clash).

    With a `problems` list, a release file that is not built in and cannot be loaded is
    left out and described there, so one bad extra file does not break the catalogue.
    """
    seen: dict[str, Release] = {}
    for directory in directories:
        for path in release_files(directory):
            try:
                release = read_release_file(path)
            except ReleaseFileError as exc:
                if problems is None or is_builtin(path):
                    raise
                problems.append(str(exc))
                continue
            first = seen.setdefault(release.name, release)
            if first is not release and problems is not None:
                problems.append(
                    f"{path}: release {release.name!r} is already defined by "
                    f"{first.source_file}; this copy is ignored"
                )
    return list(seen.values())


# --------------------------------------------------------------------------- writing

SAE_KEY_ORDER = (
    "id",
    "path",
    "hook_name",
    "hook_layer",
    "hook_name_out",
    "hf_hook_name",
    "architecture",
    "d_in",
    "d_out",
    "d_sae",
    "k",
    "context_size",
    "normalize_activations",
    "norm_scaling_factor",
    "nested_widths",
    "dataset",
    "neuronpedia",
    "l0",
    "variance_explained",
    "sha256",
)


def factor_defaults(
    entries: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Move values every entry shares into `defaults`; drop unknown optional fields.

    Entries come back with their keys in SAE_KEY_ORDER, so written files read alike."""
    defaults: dict[str, Any] = {}
    for key in INHERITABLE:
        values = [repr(e.get(key)) for e in entries]
        if len(set(values)) == 1 and all(key in e for e in entries):
            value = entries[0].get(key)
            if value is not None or key in REQUIRED_SAE_FIELDS:
                defaults[key] = value
    saes = []
    for e in entries:
        out = {}
        for key in SAE_KEY_ORDER:
            if key in defaults or key not in e:
                continue
            if e[key] is None and key not in REQUIRED_SAE_FIELDS:
                continue
            out[key] = e[key]
        saes.append(out)
    ordered = {k: defaults[k] for k in SAE_KEY_ORDER if k in defaults}
    return ordered, saes


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    # Short lists of numbers (nested_widths) read best inline.
    flow = all(isinstance(v, int | float) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _make_dumper() -> type:
    import yaml  # deferred: yaml

    if "_Dumper" not in globals():

        class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
            pass

        _Dumper.add_representer(list, _represent_list)
        globals()["_Dumper"] = _Dumper
    return globals()["_Dumper"]


def dump_release(doc: Mapping[str, Any]) -> str:
    import yaml  # deferred: yaml

    return yaml.dump(
        dict(doc),
        Dumper=_make_dumper(),
        sort_keys=False,
        allow_unicode=True,
        width=4096,
        default_flow_style=False,
    )
