"""The contributor path: scaffold a release from a repository, and check releases against
their repositories (what upstream's daily sync job does).

Both read the repository listing through huggingface_hub (so `HF_ENDPOINT` and tokens
apply) and let the format plugin's `discover` and `describe` do the format-specific work.

The release-file writing itself (`release_document`, `entry_fields`, `render_release`) is
shared with `saereg detect`, which writes the same file around one SAE it found: the model
a config names goes through the models table, and what a canonical config states becomes
entry fields, the same way in both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saereg.base.errors import SaeregError
from saereg.catalogue.models import get_model
from saereg.catalogue.records import REQUIRED_SAE_FIELDS, Release, SAEEntry, layer_of_hook
from saereg.catalogue.release_files import SAE_KEY_ORDER, dump_release, factor_defaults
from saereg.formats import SMALL_FILE_LIMIT, CanonicalFileError, Format, get_registry
from saereg.store.fetch import FetchError, check_reachable, hf_endpoint, offline
from saereg.store.hub_listing import hub_read_small
from saereg.store.layer_config import LayerConfig
from saereg.store.sae_config import SAEConfig

TODO = "TODO"
#: Where a model the table lacks must be added before `saereg validate` accepts the file.
MODELS_TABLE = "releases/models/models.yaml"


class OfflineError(SaeregError):
    """The command needs the hub and the hub cannot be used (exit code 2)."""

    exit_code = 2


def _api() -> Any:
    from huggingface_hub import HfApi  # deferred: huggingface_hub

    if offline():
        raise OfflineError(
            "this command reads repository listings from the hub, but downloads are off "
            "(HF_HUB_OFFLINE / SAEREG_OFFLINE); run it online"
        )
    try:
        endpoint = hf_endpoint()
        check_reachable(endpoint, "the repository listing")  # fail fast, not after retries
    except FetchError as exc:
        raise OfflineError(str(exc)) from None
    return HfApi(endpoint=endpoint)


def _hub_call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from huggingface_hub import errors as hf_errors  # deferred: huggingface_hub

    try:
        return fn(*args, **kwargs)
    except hf_errors.RepositoryNotFoundError:
        raise SaeregError(f"{what}: repository not found on {hf_endpoint()}") from None
    except hf_errors.RevisionNotFoundError:
        raise SaeregError(f"{what}: revision not found") from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise OfflineError(
            f"{what}: cannot reach {hf_endpoint()} ({exc}); check the network or HF_ENDPOINT"
        ) from None


def repo_listing(repo_id: str, revision: str | None) -> tuple[str, list[str]]:
    """(commit, every file path) of a model repository at `revision` (default: main)."""
    api = _api()
    info = _hub_call(repo_id, api.model_info, repo_id, revision=revision or "main")
    files = _hub_call(repo_id, api.list_repo_files, repo_id, revision=info.sha)
    return info.sha, sorted(files)


def release_name(text: str) -> str:
    """`text` as a release name: lower case, runs of other characters than letters,
    digits, ``.``, ``_`` and ``-`` made one ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.").lower()[:100]


def default_release_name(repo_id: str) -> str:
    return release_name(repo_id.split("/", 1)[1])


def hub_reader(repo_id: str, commit: str) -> Callable[[str], bytes]:
    """`read_small` for a repository at a commit (what detection and `model_named` read)."""

    def read_small(path: str) -> bytes:
        try:
            return hub_read_small(repo_id, commit, path, SMALL_FILE_LIMIT)
        except FetchError as exc:
            raise CanonicalFileError(str(exc)) from None

    return read_small


def detect_repo_format(repo_id: str, commit: str, listing: list[str]) -> tuple[Format, list[str]]:
    """The format of a repository's SAEs, by the formats' own detection (the same that
    `saereg detect` and `load_sae("hf:…")` use): the most confident format. Two formats
    equally sure (of the same SAEs, or of different ones in a repository that mixes
    formats) is an error naming both: a release file has one format."""
    found = get_registry().detect(listing, hub_reader(repo_id, commit))
    if not found:
        raise SaeregError(
            f"no installed format recognises the files of {repo_id} at {commit[:12]} "
            f"({len(listing)} files); pass --format NAME (`saereg plugins` lists them)"
        )
    ranked = sorted(found, key=lambda fm: (-fm[1].confidence, fm[0].name))
    best, match = ranked[0]
    tied = [f"{f.name} ({len(m.paths)})" for f, m in ranked[1:] if m.confidence == match.confidence]
    if tied:
        raise SaeregError(
            f"{repo_id}: formats {best.name} ({len(match.paths)}), {', '.join(tied)} each "
            "recognise SAEs in it equally surely (the number of SAEs in parentheses); "
            "choose one with --format"
        )
    return best, [p for p in match.paths if p]


def scaffold(
    repo_id: str, fmt: Format | None, name: str | None = None, revision: str | None = None
) -> tuple[str, str, int]:
    """A release file for every SAE `fmt` (by default: the detected format) finds in
    `repo_id`: (name, YAML text, n SAEs)."""
    commit, listing = repo_listing(repo_id, revision)
    detected: list[str] = []
    if fmt is None:
        fmt, detected = detect_repo_format(repo_id, commit, listing)
    found = fmt.discover(repo_id, listing) or [{"id": p, "path": p} for p in detected]
    if not found:
        raise SaeregError(
            f"format {fmt.name!r} found no SAEs in {repo_id} at {commit[:12]} ({len(listing)} "
            "files); check --format, or that the repository holds this format's files"
        )
    name = name or default_release_name(repo_id)
    provisional = Release(
        name=name,
        format=fmt.name,
        publisher=TODO,
        model=TODO,
        revision=commit,
        saes=(),
        repo_id=repo_id,
    )
    entries = []
    for item in found:
        entry = dict(item)
        try:
            derived = fmt.describe(provisional, SAEEntry(id=entry["id"], path=entry["path"]))
        except ValueError:
            derived = {}
        for key, value in derived.items():
            entry.setdefault(key, value)
        entries.append(entry)
    # the model as the first SAE's own config names it (one small file read)
    stated = fmt.model_named(listing, hub_reader(repo_id, commit), found[0]["path"])
    doc, model_comment = release_document(
        name=name,
        fmt=fmt.name,
        publisher=repo_id.split("/", 1)[0],
        stated_model=stated[0] if stated else None,
        repo_id=repo_id,
        revision=commit,
        entries=entries,
        links={"model": model_link(stated[0] if stated else None)},
    )
    saes = doc["saes"]
    unknown = sorted({k for e in entries for k in REQUIRED_SAE_FIELDS if e.get(k) is None})
    header = [
        f"# Scaffolded by `saereg new --repo {repo_id} --format {fmt.name}` at commit {commit}"
        + (" (format detected)." if detected else "."),
        "# Before opening a pull request (see CONTRIBUTING.md):",
        f"#  - check `model` ({stated[1]} names it) and `links.model`;"
        if stated
        else "#  - set `model` to the model the SAEs were trained on, and `links.model` to "
        "its page;",
        "#  - check `publisher`; set `license` if the repository states one;",
    ]
    if "hook_name" in unknown:  # the schema requires it: every SAE reads some hook
        header.append(
            "#  - set each SAE's `hook_name` (TransformerLens spelling, e.g. "
            "blocks.8.hook_resid_pre); the schema requires one;"
        )
    optional = [k for k in unknown if k != "hook_name"]
    if optional:
        header.append(
            f"#  - fill in {', '.join(optional)} where the repository publishes them "
            "(leave null where it does not);"
        )
    header += [
        "#  - add `neuronpedia`, `l0` and `variance_explained` per SAE where they exist;",
        "#  - run `saereg validate` and `saereg docs`.",
    ]
    return name, "\n".join(header) + "\n" + render_release(doc, model_comment), len(saes)


# --------------------------------------------------------------------------- release files


def release_model(stated: str | None) -> tuple[str, str | None]:
    """The `model:` value for a model a config names, and a YAML comment to put beside it
    (or None): the canonical name when the models table knows any alias of it
    (``google/gemma-2-2b`` → ``gemma-2-2b``), else the name as written, with a comment
    that validation needs it in the table; ``TODO`` when nothing names it."""
    if not stated:
        return TODO, None
    info = get_model(stated)
    if info is not None:
        return info.name, None
    return stated, (
        f"not in the models table: add it to {MODELS_TABLE} (CONTRIBUTING.md, "
        "'How to add a model'), or `saereg validate` reports it as unknown"
    )


def model_link(stated: str | None) -> str:
    """The model's hub page: from the models table, or the name itself when it is a hub
    id (ORG/NAME); a TODO link otherwise."""
    info = get_model(stated)
    hub = info.hub_id if info is not None else None
    if hub is None and stated and re.fullmatch(r"[\w.-]+/[\w.-]+", stated):
        hub = stated
    return f"https://huggingface.co/{hub or TODO}"


#: (canonical architecture, skip connection) → a transcoder's release `architecture`
#: (SAELens' vocabulary); TopK transcoders have no name there (they state `kind`).
_TRANSCODERS = {
    ("relu", False): "transcoder",
    ("relu", True): "skip_transcoder",
    ("jumprelu", False): "jumprelu_transcoder",
    ("jumprelu", True): "jumprelu_skip_transcoder",
}


def entry_fields(cfg: SAEConfig, skip: bool | None = None) -> dict[str, Any]:
    """The release-entry fields a canonical config states: hooks, architecture, widths,
    k, context size, input normalization (with its factor), nested widths, dataset.

    A transcoder's architecture names its skip connection, so it is written only when
    `skip` says whether the weights hold one, and only where the release vocabulary has
    a name for it; otherwise the entry states ``kind: transcoder``."""
    out: dict[str, Any] = {"hook_name": cfg.hook_name, "hook_layer": cfg.hook_layer}
    if cfg.transcoder:
        out["hook_name_out"] = cfg.hook_name_out
    if cfg.hf_hook_name:
        out["hf_hook_name"] = cfg.hf_hook_name
    architecture: str | None = cfg.architecture
    if cfg.transcoder:
        architecture = None if skip is None else _TRANSCODERS.get((cfg.architecture, skip))
        if architecture is None:
            out["kind"] = "transcoder"
    out["architecture"] = architecture
    out.update(d_in=cfg.d_in, d_sae=cfg.d_sae)
    if cfg.transcoder:
        out["d_out"] = cfg.d_out
    if cfg.k is not None:
        out["k"] = cfg.k
    out["context_size"] = cfg.context_size
    kind = cfg.normalization["kind"]
    if kind == "scale":
        out["normalize_activations"] = "expected_average_only_in"
        out["norm_scaling_factor"] = float(cfg.normalization["factor"])
    else:
        out["normalize_activations"] = kind
    if cfg.nested_widths:
        out["nested_widths"] = list(cfg.nested_widths)
    if cfg.dataset:
        out["dataset"] = cfg.dataset
    return {k: v for k, v in out.items() if v is not None or k in REQUIRED_SAE_FIELDS}


def dictionary_fields(cfg: LayerConfig) -> dict[str, Any]:
    """The entry fields of a multi-layer dictionary that one of its canonical layer
    configs states: layer 0's sites (``hook_name`` is layer 0's input site, as release
    files give it), the layer count, architecture, widths and k."""
    hook = cfg.hook_names[0] if cfg.hook_names else None
    out: dict[str, Any] = {
        "n_layers": cfg.n_layers,
        "hook_name": hook,
        "hook_layer": layer_of_hook(hook),
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "k": cfg.k,
    }
    if cfg.kind != "crosscoder":  # a transcoder's output site and width
        out["hook_name_out"] = cfg.hook_names_out[0] if cfg.hook_names_out else None
        out["d_out"] = cfg.d_out
    return {k: v for k, v in out.items() if v is not None or k in REQUIRED_SAE_FIELDS}


#: Entry keys in the order release files write them (a dictionary's kind after its path).
_ENTRY_ORDER = ("id", "path", "kind", "n_layers", *SAE_KEY_ORDER[2:])


def release_document(
    *,
    name: str,
    fmt: str,
    publisher: str,
    stated_model: str | None,
    repo_id: str,
    revision: str | None,
    entries: list[dict[str, Any]],
    links: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """A release file around `entries` (every required field stated, if only as null;
    values all of several entries share moved into `defaults`) and the comment for its
    `model:` line (see `release_model`)."""
    filled = []
    for item in entries:
        entry = dict(item)
        for key in REQUIRED_SAE_FIELDS:
            entry.setdefault(key, None)
        filled.append(entry)
    defaults: dict[str, Any] = {}
    saes = filled
    if len(filled) > 1:  # (one SAE keeps its values on it)
        defaults, saes = factor_defaults(filled)
        for entry, out in zip(filled, saes, strict=True):
            for key in ("kind", "n_layers"):  # not in the order factor_defaults writes
                if entry.get(key) is not None and key not in defaults:
                    out[key] = entry[key]
    saes = [  # in the files' key order; unknown optional values left out
        {k: e[k] for k in _ENTRY_ORDER if k in e and (e[k] is not None or k in REQUIRED_SAE_FIELDS)}
        for e in saes
    ]
    model, comment = release_model(stated_model)
    doc: dict[str, Any] = {
        "schema": 1,
        "name": name,
        "format": fmt,
        "publisher": publisher,
        "model": model,
        "repo_id": repo_id,
        "revision": revision,
        "license": None,
    }
    if links:
        doc["links"] = links
    if defaults:
        doc["defaults"] = defaults
    doc["saes"] = saes
    return doc, comment


def render_release(doc: dict[str, Any], model_comment: str | None = None) -> str:
    """The YAML text of a release document, with `model_comment` on its `model:` line."""
    text = dump_release(doc)
    if model_comment is None:
        return text
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("model:"):
            lines[i] = f"{line.rstrip()}  # {model_comment}\n"
            break
    return "".join(lines)


@dataclass
class SyncReport:
    release: str
    repo_id: str
    revision: str
    vanished: list[str] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not self.vanished and not self.unregistered


def sync_check(release: Release, fmt: Format, registered_paths: set[str]) -> SyncReport:
    """Paths the release lists that the repository no longer has, and SAE folders in the
    repository that no release of it registers (`registered_paths`, across releases)."""
    assert release.repo_id is not None
    commit, listing = repo_listing(release.repo_id, release.revision)
    files = set(listing)
    report = SyncReport(release.name, release.repo_id, commit)
    for entry in release.saes:
        missing = [
            f.path for f in fmt.files(release, entry) if not f.optional and f.path not in files
        ]
        if missing:
            report.vanished.append(f"{entry.id} ({', '.join(missing)})")
    for item in fmt.discover(release.repo_id, listing):
        if item["path"].rstrip("/") not in registered_paths:
            report.unregistered.append(item["path"])
    return report


def write_new_release(text: str, name: str, out_dir: Path) -> Path:
    target = out_dir / f"{name}.yaml"
    if target.exists():
        raise SaeregError(
            f"{target} already exists; saereg new never overwrites a release (choose another "
            "--release name, or edit the existing file)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
