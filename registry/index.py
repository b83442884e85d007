"""The compiled catalogue index: every SAE of every release in one JSON file.

`list`, Neuronpedia-id lookups and did-you-mean suggestions need the whole catalogue;
parsing 170 YAML files each time costs about a second, so the parsed rows are kept in
``$SAEREG_CACHE/index/catalog-v1.json``. The index carries a fingerprint of the release
files it was built from (name, size, mtime) and is rebuilt only when one changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import MODELS_FILE, builtin_release_dir, read_releases, release_files
from .settings import cache_dir

INDEX_VERSION = 1

#: Columns of one SAE row in the index, in order.
ROW_FIELDS = (
    "release",
    "id",
    "path",
    "hook_name",
    "hook_layer",
    "d_sae",
    "d_in",
    "context_size",
    "normalize_activations",
    "architecture",
    "neuronpedia",
    "l0",
)
RELEASE_FIELDS = ("name", "format", "publisher", "model", "repo_id", "base_url", "file", "n_saes")


@dataclass(frozen=True)
class CatalogIndex:
    releases: dict[str, dict[str, Any]]
    rows: list[list[Any]]

    def by_neuronpedia(self) -> dict[str, tuple[str, str]]:
        col = ROW_FIELDS.index("neuronpedia")
        return {r[col]: (r[0], r[1]) for r in self.rows if r[col]}

    def records(self, rows: Sequence[list[Any]] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts, with the release's model, format and repository added."""
        out = []
        for row in self.rows if rows is None else rows:
            rec = dict(zip(ROW_FIELDS, row, strict=True))
            rel = self.releases[rec["release"]]
            rec["model"] = rel["model"]
            rec["format"] = rel["format"]
            rec["repo_id"] = rel["repo_id"] or rel["base_url"]
            out.append(rec)
        return out


def _fingerprint(dirs: Sequence[Path]) -> list[list[Any]]:
    fp: list[list[Any]] = []
    for d in dirs:
        for path in release_files(d):
            st = path.stat()
            fp.append([str(path), st.st_size, st.st_mtime_ns])
    # Rows hold canonical model names and derived widths: the models tables count too.
    for table in dict.fromkeys(d / MODELS_FILE for d in [builtin_release_dir(), *dirs]):
        if table.is_file():
            st = table.stat()
            fp.append([str(table), st.st_size, st.st_mtime_ns])
    return fp


def _index_path() -> Path:
    return cache_dir() / "index" / f"catalog-v{INDEX_VERSION}.json"


def build_index(dirs: Sequence[Path]) -> CatalogIndex:
    releases: dict[str, dict[str, Any]] = {}
    rows: list[list[Any]] = []
    for rel in read_releases(dirs):
        releases[rel.name] = {
            "name": rel.name,
            "format": rel.format,
            "publisher": rel.publisher,
            "model": rel.model,
            "repo_id": rel.repo_id,
            "base_url": rel.base_url,
            "file": rel.source_file,
            "n_saes": len(rel.saes),
        }
        for e in rel.saes:
            rows.append([rel.name, *(getattr(e, f) for f in ROW_FIELDS[1:])])
    return CatalogIndex(releases, rows)


def load_index(dirs: Sequence[Path] | None = None) -> CatalogIndex:
    """The index for `dirs` (default: the built-in releases), rebuilt if stale."""
    dirs = list(dirs) if dirs is not None else [builtin_release_dir()]
    fingerprint = _fingerprint(dirs)
    path = _index_path()
    try:
        with path.open(encoding="utf-8") as fh:
            cached = json.load(fh)
        if cached.get("version") == INDEX_VERSION and cached.get("fingerprint") == fingerprint:
            return CatalogIndex(cached["releases"], cached["rows"])
    except (OSError, ValueError):
        pass
    index = build_index(dirs)
    _write_atomically(
        path,
        {
            "version": INDEX_VERSION,
            "fingerprint": fingerprint,
            "releases": index.releases,
            "rows": index.rows,
        },
    )
    return index


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Best effort: a read-only cache only costs speed, never correctness."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".catalog-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        return


def load_model_docs(path: Path) -> list[dict[str, Any]]:
    """The entries of a models table (releases/models/models.yaml), compiled to JSON.

    The compiled copy sits beside the catalogue index, keyed by the file's path, size and
    mtime, so the resolve path reads a small JSON file and never imports yaml. Full
    checking is `saereg validate` (schemas/model.v1.json).
    """
    from .errors import ReleaseFileError

    try:
        st = path.stat()
    except OSError as exc:
        raise ReleaseFileError(f"{path}: cannot read the models table: {exc.strerror}") from None
    stamp = [str(path.resolve()), st.st_size, st.st_mtime_ns, INDEX_VERSION]
    digest = hashlib.sha256(stamp[0].encode()).hexdigest()[:16]
    target = cache_dir() / "index" / f"models-v{INDEX_VERSION}-{digest}.json"
    try:
        with target.open(encoding="utf-8") as fh:
            cached = json.load(fh)
        if cached.get("stamp") == stamp:
            return list(cached["models"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from .catalog import load_yaml

    doc = load_yaml(path.read_text(encoding="utf-8"), str(path))
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ReleaseFileError(f"{path}: a models table is a mapping with a 'models:' list")
    _write_atomically(target, {"stamp": stamp, "models": models})
    return models
