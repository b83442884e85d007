"""Release files → frozen dataclasses.

A release file is parsed once, migrated to the current schema version, and turned into
`Release` / `SAEEntry` objects whose SAE-level fields already include the release's
`defaults`. Nothing here imports torch or jsonschema: this module sits on the resolve
path, which must stay fast (see benchmarks/bench_registry.py).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import ReleaseFileError
from .models import ModelInfo, derive_widths, get_model

if TYPE_CHECKING:
    import yaml

CURRENT_SCHEMA = 1

#: SAE fields a release's `defaults` may set for all of its entries.
INHERITABLE = (
    "architecture",
    "d_in",
    "d_out",
    "d_sae",
    "k",
    "context_size",
    "normalize_activations",
    "nested_widths",
    "dataset",
    "hook_name_out",
)

#: The models table, relative to a release directory (a subfolder, so that it is never
#: taken for a release file).
MODELS_FILE = "models/models.yaml"

#: Fields every SAE must state (in the entry or through defaults), even if only as null.
REQUIRED_SAE_FIELDS = ("hook_name", "hook_layer", "d_sae", "context_size", "normalize_activations")


def plain_dict(obj: Any) -> dict[str, Any]:
    """A frozen dataclass as JSON-ready data (read-only mappings and tuples unwrapped)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


@dataclass(frozen=True)
class SAEEntry:
    """One SAE of a release, with the release defaults already applied."""

    id: str
    path: str
    hook_name: str | None = None
    hook_layer: int | None = None
    d_sae: int | None = None
    context_size: int | None = None
    normalize_activations: str | None = None
    architecture: str | None = None
    d_in: int | None = None
    d_out: int | None = None
    k: int | None = None
    hook_name_out: str | None = None
    hf_hook_name: str | None = None
    nested_widths: tuple[int, ...] | None = None
    dataset: str | None = None
    neuronpedia: str | None = None
    l0: float | None = None
    variance_explained: float | None = None
    norm_scaling_factor: float | None = None
    sha256: Mapping[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


SAE_FIELDS = tuple(f.name for f in fields(SAEEntry))


@dataclass(frozen=True)
class Release:
    """A release: where its files live, which format reads them, and its SAEs."""

    name: str
    format: str
    publisher: str
    model: str
    revision: str | None
    saes: tuple[SAEEntry, ...]
    repo_id: str | None = None
    base_url: str | None = None
    license: str | None = None
    description: str | None = None
    links: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    model_from_pretrained_kwargs: Mapping[str, Any] | None = None
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source_file: str | None = None

    def sae(self, sae_id: str) -> SAEEntry | None:
        for entry in self.saes:
            if entry.id == sae_id:
                return entry
        return None

    @property
    def location(self) -> str:
        """Human-readable origin of the files: the hub repo or the base URL."""
        return self.repo_id or self.base_url or "?"


# --------------------------------------------------------------------------- names

_LAYER_IN_HOOK = re.compile(r"(?:^|\.)(?:blocks|layers)\.(\d+)(?:\.|$)")

#: Publishers name power-of-two widths loosely ("65k" is 65536, "131k" is 131072).
POW2_WIDTH_NAMES = {
    "2k": 2**11,
    "4k": 2**12,
    "8k": 2**13,
    "16k": 2**14,
    "32k": 2**15,
    "64k": 2**16,
    "65k": 2**16,
    "128k": 2**17,
    "131k": 2**17,
    "256k": 2**18,
    "262k": 2**18,
    "512k": 2**19,
    "524k": 2**19,
    "1m": 2**20,
}


def layer_of_hook(hook_name: str | None) -> int | None:
    """The block index a TransformerLens or Hugging Face hook name points into.

    ``hook_embed`` (before block 0) counts as layer 0, as the SAELens tables do.
    """
    if not hook_name:
        return None
    match = _LAYER_IN_HOOK.search(hook_name)
    if match:
        return int(match.group(1))
    return 0 if hook_name in {"hook_embed", "hook_pos_embed", "embed_tokens"} else None


def parse_width(text: str) -> int:
    """'16k' → 16384, '65k' → 65536, '1m' → 1048576, '2pow14' → 16384, '24576' → 24576."""
    text = text.strip().lower()
    if text.startswith("2pow") and text[4:].isdigit():
        return 2 ** int(text[4:])
    if text in POW2_WIDTH_NAMES:
        return POW2_WIDTH_NAMES[text]
    if text.isdigit():
        return int(text)
    raise ValueError(f"unrecognised width {text!r}")


# --------------------------------------------------------------------------- migrations


def _migrate_0_to_1(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 0 is the SAELens `pretrained_saes.yaml` shape of one release.

    It names the converter `conversion_func` (null meaning the SAELens-native layout),
    may carry a `config_overrides` mapping, and has no publisher field.
    """
    doc = dict(doc)
    conversion = doc.pop("conversion_func", None)
    doc.setdefault("format", conversion or "saelens")
    overrides = dict(doc.pop("config_overrides", None) or {})
    kwargs = overrides.pop("model_from_pretrained_kwargs", None)
    if kwargs:
        doc.setdefault("model_from_pretrained_kwargs", kwargs)
    defaults = dict(doc.get("defaults") or {})
    if "dataset_path" in overrides:
        defaults.setdefault("dataset", overrides.pop("dataset_path"))
    if "normalize_activations" in overrides:
        defaults.setdefault("normalize_activations", overrides.pop("normalize_activations"))
    if defaults:
        doc["defaults"] = defaults
    if "publisher" not in doc:
        repo = doc.get("repo_id") or ""
        doc["publisher"] = repo.split("/", 1)[0] if "/" in repo else "unknown"
    doc.setdefault("revision", None)
    saes = []
    for entry in doc.get("saes") or []:
        if isinstance(entry, dict) and not isinstance(entry.get("path"), str | type(None)):
            entry = {**entry, "path": str(entry["path"])}
        saes.append(entry)
    doc["saes"] = saes
    doc["schema"] = 1
    return doc


#: from-version → function returning the document at from-version + 1.
MIGRATIONS: dict[int, Any] = {0: _migrate_0_to_1}


def migrate(doc: dict[str, Any], where: str = "<release>") -> dict[str, Any]:
    """Bring a parsed release document up to CURRENT_SCHEMA, one version at a time."""
    version = doc.get("schema")
    if version is None:
        raise ReleaseFileError(
            f"{where}: missing 'schema:' (the schema version); add 'schema: {CURRENT_SCHEMA}' "
            "as the first line"
        )
    if not isinstance(version, int) or isinstance(version, bool):
        raise ReleaseFileError(f"{where}: 'schema' must be an integer, got {version!r}")
    if version > CURRENT_SCHEMA:
        raise ReleaseFileError(
            f"{where}: schema version {version} is newer than this saereg understands "
            f"(it knows versions 0 to {CURRENT_SCHEMA}); upgrade saereg"
        )
    while version < CURRENT_SCHEMA:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ReleaseFileError(
                f"{where}: unknown schema version {version}; known versions are "
                f"{', '.join(str(v) for v in sorted([*MIGRATIONS, CURRENT_SCHEMA]))}"
            )
        doc = step(doc)
        version = doc["schema"]
    return doc


# --------------------------------------------------------------------------- parsing


@contextmanager
def gc_paused() -> Iterator[None]:
    """Parsing allocates thousands of small objects, which can trigger a full garbage
    collection; in a process that imported torch that walk alone costs ~80 ms. Parsed
    documents hold no reference cycles, so the collector is paused meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def __getattr__(name: str) -> Any:
    # yaml is imported on first use: the resolve path reads compiled JSON only, and
    # importing yaml costs a few milliseconds of every short-lived `saereg resolve`.
    if name == "_Loader":
        import yaml

        loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster
        globals()["_Loader"] = loader
        return loader
    if name == "_Dumper":
        return _make_dumper()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_yaml(text: str, where: str) -> Any:
    import yaml

    try:
        with gc_paused():
            return yaml.load(text, Loader=__getattr__("_Loader"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ReleaseFileError(f"{where}{line}: not valid YAML: {problem}") from None


def release_from_doc(doc: dict[str, Any], source_file: str | None = None) -> Release:
    """Build the frozen Release from a document that already follows the current schema.

    Only the structure needed to build objects is checked here; full checking is
    `saereg validate` (schema.py and lint.py).
    """
    where = source_file or doc.get("name", "<release>")
    defaults = dict(doc.get("defaults") or {})
    model = _known_model(doc.get("model"))
    saes = []
    for i, raw in enumerate(doc.get("saes") or []):
        if not isinstance(raw, dict) or "id" not in raw or "path" not in raw:
            raise ReleaseFileError(f"{where}: saes[{i}] needs at least 'id' and 'path'")
        values = {k: v for k, v in defaults.items() if k in INHERITABLE}
        values.update({k: v for k, v in raw.items() if k in SAE_FIELDS})
        values["id"] = str(values["id"])
        values["path"] = str(values["path"])
        if values.get("nested_widths") is not None:
            values["nested_widths"] = tuple(values["nested_widths"])
        if values.get("sha256") is not None:
            values["sha256"] = MappingProxyType(dict(values["sha256"]))
        if model is not None:
            derive_widths(values, model)
        saes.append(SAEEntry(**values))
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
            license=doc.get("license"),
            description=doc.get("description"),
            links=MappingProxyType(dict(doc.get("links") or {})),
            model_from_pretrained_kwargs=doc.get("model_from_pretrained_kwargs"),
            defaults=MappingProxyType(defaults),
            source_file=source_file,
        )
    except KeyError as exc:
        raise ReleaseFileError(f"{where}: missing required field {exc.args[0]!r}") from None


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
        stat = path.stat()
        stamp = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, CURRENT_SCHEMA]
    except OSError as exc:
        raise ReleaseFileError(f"{path}: cannot read: {exc.strerror}") from None
    compiled = _compiled_path(stamp[0])
    try:
        with gc_paused():
            cached = json.loads(compiled.read_bytes())
        if cached.get("stamp") == stamp:
            return release_from_doc(cached["doc"], str(path))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReleaseFileError(f"{path}: cannot read: {exc.strerror}") from None
    doc = load_yaml(text, str(path))
    if not isinstance(doc, dict):
        raise ReleaseFileError(f"{path}: a release file must be a YAML mapping")
    doc = migrate(doc, str(path))
    release = release_from_doc(doc, str(path))
    _write_compiled(compiled, {"stamp": stamp, "doc": doc})
    return release


def _compiled_path(resolved: str) -> Path:
    from .settings import cache_dir

    digest = hashlib.sha256(resolved.encode()).hexdigest()[:24]
    return cache_dir() / "index" / "releases" / f"{digest}.json"


def _write_compiled(target: Path, payload: dict[str, Any]) -> None:
    """Best effort: an unwritable cache only costs speed."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, separators=(",", ":"), default=str)
        os.replace(tmp, target)
    except (OSError, TypeError, ValueError):
        return


# --------------------------------------------------------------------------- locations


def builtin_release_dir() -> Path:
    """The releases shipped with saereg: inside the wheel, or beside registry/ in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "releases", here.parent / "releases"):
        if candidate.is_dir():
            return candidate
    return here / "releases"


def builtin_schema_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas", here.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    return here / "schemas"


def release_files(directory: Path) -> Iterator[Path]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(".yaml") and not name.startswith("."):
            yield directory / name


def read_releases(directories: Iterable[Path]) -> list[Release]:
    """Every release in `directories`; where two share a name the first directory wins
    (`saereg validate` reports the clash)."""
    seen: dict[str, Release] = {}
    for directory in directories:
        for path in release_files(directory):
            release = read_release_file(path)
            seen.setdefault(release.name, release)
    return list(seen.values())


def release_names(directory: Path) -> list[str]:
    return [p.name[: -len(".yaml")] for p in release_files(directory)]


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
    import yaml

    if "_Dumper" not in globals():

        class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
            pass

        _Dumper.add_representer(list, _represent_list)
        globals()["_Dumper"] = _Dumper
    return globals()["_Dumper"]


def dump_release(doc: Mapping[str, Any]) -> str:
    import yaml

    return yaml.dump(
        dict(doc),
        Dumper=_make_dumper(),
        sort_keys=False,
        allow_unicode=True,
        width=4096,
        default_flow_style=False,
    )
