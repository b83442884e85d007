"""The compiled catalogue index: every SAE of every release in one JSON file.

`list`, Neuronpedia-id lookups and did-you-mean suggestions need the whole catalogue;
parsing 170 YAML files each time costs about a second, so the parsed rows are kept in
``$SAEREG_CACHE/index/catalog-v3.json``. The index carries a fingerprint of the release
files it was built from (name, size, mtime) and is rebuilt only when one changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saereg.base.errors import CatalogueWarning
from saereg.catalogue.compiled import index_dir, read_compiled, write_compiled
from saereg.catalogue.release_dirs import (
    MODELS_FILE,
    builtin_release_dir,
    is_builtin,
    release_files,
)
from saereg.catalogue.release_files import read_releases

INDEX_VERSION = 3  # 2: releases carry repo_aliases; 3: rows carry the entry's kind
#: Catalogue problems shown as warnings each time the index is used; the rest are counted.
SHOWN_PROBLEMS = 5

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
    "kind",
)
RELEASE_FIELDS = (
    "name",
    "format",
    "publisher",
    "model",
    "repo_id",
    "repo_aliases",
    "base_url",
    "file",
    "n_saes",
    "builtin",
)


class CatalogIndex:
    """Every release (a summary each) and one row per SAE (`ROW_FIELDS`), with the
    problems found building it: release files left out (invalid) and ids claimed twice,
    one sentence each.

    (A plain class: this module is imported on the resolve path, and defining a
    dataclass costs about a millisecond.)"""

    __slots__ = ("problems", "releases", "rows")

    def __init__(
        self,
        releases: dict[str, dict[str, Any]],
        rows: list[list[Any]],
        problems: tuple[str, ...] = (),
    ) -> None:
        self.releases, self.rows, self.problems = releases, rows, problems

    def by_neuronpedia(self) -> dict[str, tuple[str, str]]:
        """Neuronpedia id → (release, SAE id); the first claim wins (built-in releases
        come first), later claims are in `problems`."""
        col = ROW_FIELDS.index("neuronpedia")
        out: dict[str, tuple[str, str]] = {}
        for r in self.rows:
            if r[col]:
                out.setdefault(r[col], (r[0], r[1]))
        return out

    def repo_names(self) -> dict[str, str]:
        """Every name a release's repository answers to (its repo_id and its former names,
        `repo_aliases`) → that repo_id."""
        out = {rel["repo_id"]: rel["repo_id"] for rel in self.releases.values() if rel["repo_id"]}
        for rel in self.releases.values():  # a current name is never taken over by an alias
            for alias in (rel.get("repo_aliases") or ()) if rel["repo_id"] else ():
                out.setdefault(alias, rel["repo_id"])
        return out

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
            try:
                st = path.stat()
            except OSError:  # a dangling link: build_index reports it
                fp.append([str(path), None, None])
                continue
            fp.append([str(path), st.st_size, st.st_mtime_ns])
    # Rows hold canonical model names and derived widths: the models tables count too.
    for table in dict.fromkeys(d / MODELS_FILE for d in [builtin_release_dir(), *dirs]):
        if table.is_file():
            st = table.stat()
            fp.append([str(table), st.st_size, st.st_mtime_ns])
    return fp


def _index_path() -> Path:
    return index_dir() / f"catalog-v{INDEX_VERSION}.json"


def build_index(dirs: Sequence[Path]) -> CatalogIndex:
    releases: dict[str, dict[str, Any]] = {}
    rows: list[list[Any]] = []
    problems: list[str] = []
    claimed_np: dict[str, str] = {}
    builtin_paths: dict[tuple[str, str], str] = {}
    for rel in read_releases(dirs, problems):
        builtin = rel.source_file is not None and is_builtin(Path(rel.source_file))
        releases[rel.name] = {
            "name": rel.name,
            "format": rel.format,
            "publisher": rel.publisher,
            "model": rel.model,
            "repo_id": rel.repo_id,
            "repo_aliases": list(rel.repo_aliases),
            "base_url": rel.base_url,
            "file": rel.source_file,
            "n_saes": len(rel.saes),
            "builtin": builtin,
        }
        for e in rel.saes:
            rows.append([rel.name, *(getattr(e, f) for f in ROW_FIELDS[1:-1]), e.resolved_kind])
            ref = f"{rel.name}/{e.id}"
            if e.neuronpedia:
                first = claimed_np.setdefault(e.neuronpedia, ref)
                if first != ref:
                    problems.append(
                        f"{rel.source_file}: Neuronpedia id {e.neuronpedia!r} of {ref} is "
                        f"already used by {first}, which keeps it"
                    )
            if rel.repo_id:
                key = (rel.repo_id, e.path.strip("/"))
                if builtin:
                    builtin_paths.setdefault(key, ref)
                elif key in builtin_paths:
                    problems.append(
                        f"{rel.source_file}: hf:{key[0]}/{key[1]} of {ref} is a built-in "
                        f"SAE ({builtin_paths[key]}), which keeps the reference"
                    )
    return CatalogIndex(releases, rows, tuple(problems))


def report_problems(index: CatalogIndex) -> None:
    """Each catalogue problem as a warning (one line each in the CLI)."""
    for problem in index.problems[:SHOWN_PROBLEMS]:
        warnings.warn(problem, CatalogueWarning, stacklevel=3)
    extra = len(index.problems) - SHOWN_PROBLEMS
    if extra > 0:
        warnings.warn(
            f"… and {extra} more catalogue problems (`saereg validate DIR` lists them)",
            CatalogueWarning,
            stacklevel=3,
        )


def load_index(dirs: Sequence[Path] | None = None) -> CatalogIndex:
    """The index for `dirs` (default: the built-in releases), rebuilt if stale."""
    dirs = list(dirs) if dirs is not None else [builtin_release_dir()]
    stamp = [INDEX_VERSION, _fingerprint(dirs)]
    path = _index_path()
    cached = read_compiled(path, stamp)
    if cached is not None:
        try:
            index = CatalogIndex(cached["releases"], cached["rows"], tuple(cached["problems"]))
        except (KeyError, TypeError):
            pass  # a damaged copy: build it again
        else:
            report_problems(index)
            return index
    index = build_index(dirs)
    write_compiled(
        path,
        {
            "stamp": stamp,
            "releases": index.releases,
            "rows": index.rows,
            "problems": list(index.problems),
        },
    )
    report_problems(index)
    return index
